"""Talking to a test's Prefect server from the pytest process itself.

Prefect reads PREFECT_API_URL once, when it is first imported; in a full test run some earlier
test module has imported it long before a fixture starts a server. So a client for a given
server is always made under `temporary_settings`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def prefect_client(url: str | None = None) -> Iterator[Any]:
    """A sync Prefect client for ``url`` (default: PREFECT_API_URL of the environment now)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url or os.environ["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            yield client


@contextmanager
def prefect_settings(url: str | None = None) -> Iterator[None]:
    """Prefect settings pointing at ``url`` for in-process calls (submit, deploy, blocks)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url or os.environ["PREFECT_API_URL"]}):
        yield
