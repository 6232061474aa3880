"""Pure routing cores: no I/O, the time is passed in as ``now``."""
