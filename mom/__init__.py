"""The embedded MOM policy engine (issue 4)."""
