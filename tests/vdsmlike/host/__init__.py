"""Tests of the host package: statistics, capabilities, hardware information."""
