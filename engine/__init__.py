"""The central engine (issue 5)."""
