"""Fixtures for the agent's end-to-end tests."""

import pytest_twisted
from agent_harness import node_uri, start_agent


@pytest_twisted.async_yield_fixture
async def agent(tmp_path):
    """A real agent on a private libvirt test-driver host, with a subscribed client."""
    running = await start_agent(tmp_path, libvirt_uri=node_uri(tmp_path))
    yield running
    await running.stop()
