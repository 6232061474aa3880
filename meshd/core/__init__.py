"""The pure cores: no I/O, no clock of their own, no tasks or threads, and meshd imported
only from here (tests/unit/test_core_imports.py). proto/ (wire formats), keys (node ids)
and session_policy are here; the other pure cores (routing, membership, receipts,
invites, transport's session) move in as their last impurities go (issue 21)."""
