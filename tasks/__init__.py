"""Placeholder package; see ../shared/ARCHITECTURE.md for what it will own."""
