"""The host itself: statistics, capabilities and hardware information."""
