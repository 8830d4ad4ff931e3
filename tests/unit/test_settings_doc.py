"""docs/settings.md's table of `JOBCLOUD_*` variables is the settings model's, row for row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobcloud.blocks.settings import settings_fields
from jobcloud.blocks.settings_doc import BEGIN, COMMAND, END, main, render, settings_table

PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
REGENERATE = f"{COMMAND} docs/settings.md"


def test_the_page_is_generated_from_the_model() -> None:
    page = PAGE.read_text(encoding="utf-8")
    if render(page) != page:
        pytest.fail(f"docs/settings.md differs from the settings model (jobcloud.blocks.settings); regenerate it: {REGENERATE}")


def test_every_setting_has_a_row_and_a_meaning() -> None:
    table = settings_table()
    for name, info in settings_fields():
        assert f"| `{name}` |" in table
        extra = info.json_schema_extra
        assert info.description and isinstance(extra, dict) and extra.get("used_by"), f"{name}: no description or used_by"


def test_no_jobcloud_row_is_written_by_hand() -> None:
    page = PAGE.read_text(encoding="utf-8")
    head, _, rest = page.partition(BEGIN)
    _, _, tail = rest.partition(END)
    by_hand = [line for line in (head + tail).splitlines() if re.match(r"\|\s*`JOBCLOUD_", line)]
    assert not by_hand, f"rows of JOBCLOUD_* settings belong to the model, not the hand-written part: {by_hand}"


def test_a_stale_page_is_found_and_rewritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = PAGE.read_text(encoding="utf-8")
    stale = tmp_path / "settings.md"
    # A row the model does not have, and one of its rows gone.
    stale.write_text(page.replace("| `JOBCLOUD_POOL_TYPES` |", "| `JOBCLOUD_GONE` |"), encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert COMMAND in capsys.readouterr().err
    assert main([str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == page
    assert main(["--check", str(stale)]) == 0


def test_a_page_without_markers_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "settings.md"
    bare.write_text("# Settings\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no generated part"):
        render(bare.read_text(encoding="utf-8"))
    assert main(["--check", str(bare)]) == 2
