"""vmbed: QEMU guests for meshd's VM tier (kernel WireGuard, systemd, arm64), wired into
the netns testbed. See netns-testbed/README.md, "Guests"."""
