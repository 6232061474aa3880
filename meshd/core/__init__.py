"""The pure cores of the service layer: no I/O, no clock of their own, no tasks (issue 21;
the older cores under meshd/core/proto, routing, membership and receipts move here in turn)."""
