"""The pure cores: no I/O, no clock of their own, no tasks or threads, and meshd imported
only from here (tests/unit/core/test_core_imports.py): proto/ (wire formats), routing/,
membership/, keys (node ids), addressing and session_policy. The other pure cores
(receipts, invites, transport's session) move in as their last impurities go (issue 21)."""
