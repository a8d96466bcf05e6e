"""Figures drawn by the ``sna-orch`` commands (matplotlib, imported only when a command draws)."""
