"""The daemon: the asyncio shells that feed the pure cores (meshd.core) with what the
sockets, the kernel and the clock say, and do what the cores ask."""
