"""Secret variables of a job: checked and loaded from Prefect Secret blocks inside the job
(never through a parameter), and masked in every line of output."""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import SecretStr

from jobcloud.blocks.errors import MissingSecretError

MASK = "***"


def require_secret_blocks(blocks: dict[str, str]) -> None:
    """Raise `MissingSecretError` unless every Secret block exists (values are not read)."""
    if not blocks:
        return
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name, block in blocks.items():
            try:
                client.read_block_document_by_name(block, block_type_slug="secret", include_secrets=False)
            except ObjectNotFound:
                raise MissingSecretError(name, block) from None


def load_secret_values(blocks: dict[str, str]) -> dict[str, SecretStr]:
    """The values of the secret variables, read from their Prefect Secret blocks."""
    from prefect.blocks.system import Secret

    values: dict[str, SecretStr] = {}
    for name, block in blocks.items():
        try:
            secret = Secret.load(block)
        except ValueError:  # Prefect's "Unable to find block document named ..."
            raise MissingSecretError(name, block) from None
        raw = secret.value.get_secret_value()
        values[name] = SecretStr(raw if isinstance(raw, str) else json.dumps(raw))
    return values


def masker(values: list[str]) -> Callable[[str], str]:
    """Replaces every secret value (and each line of a multi-line one) in a line by ***."""
    parts = sorted({p for v in values for p in (v, *v.splitlines()) if p.strip()}, key=len, reverse=True)

    def mask(line: str) -> str:
        for part in parts:
            if part in line:
                line = line.replace(part, MASK)
        return line

    return mask
