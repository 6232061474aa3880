"""WireGuard backends behind one neutral device/peer model (as wireguard-tools' ipc.c)."""
