"""Provisioning a new household node from an invite; the command is provisioning/provision."""
