"""Command-line entry points: vdsmlike-agent and vdsmlike-client."""
