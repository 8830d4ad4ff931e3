"""Fixtures of the integration tests: a real SeaweedFS S3 server per test module."""

from __future__ import annotations

import pytest

from tests.integration.seaweed import Seaweed


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS with S3 on free ports, started for one test module and stopped after it."""
    server = Seaweed(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()
