"""Kernel adapters for addresses, links, routes and sysctls."""
