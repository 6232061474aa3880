"""Pure wire formats: bytes in, frozen dataclasses out, and back. No I/O, no clocks."""
