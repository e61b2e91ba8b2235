"""Data models of this app; filled in by its feature issues."""
