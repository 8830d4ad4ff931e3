"""docs/settings.md's table of `JOBCLOUD_*` variables, rendered from the settings model.

`python -m jobcloud.blocks.settings_doc [PAGE]` rewrites the part of PAGE (default
docs/settings.md) between `BEGIN` and `END`; `--check` only says whether it is up to date
(exit 1 if not). The rest of the page (other programs' variables) is written by hand.
"""

from __future__ import annotations

import argparse
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from jobcloud.blocks.settings import settings_fields

COMMAND = "python -m jobcloud.blocks.settings_doc"
BEGIN = f"<!-- BEGIN JOBCLOUD SETTINGS: generated from jobcloud.blocks.settings by `{COMMAND}`; do not edit -->"
END = "<!-- END JOBCLOUD SETTINGS -->"
DEFAULT_PAGE = Path("docs/settings.md")
TYPE_NAMES: dict[Any, str] = {str: "text", int: "integer", float: "number", bool: "`true`/`false`", Path: "path", SecretStr: "secret text"}


def type_text(annotation: Any) -> str:
    """How a field's type reads in the table (`text`, `path`, `` `engine` \\| `process` ``...)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, types.UnionType) and len(args) == 1:
        return type_text(args[0])
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " or ".join(f"`{m.value}`" for m in annotation)
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(info: FieldInfo) -> str:
    """How a field's default reads in the table."""
    if info.default_factory is not None or info.default is None:
        return "none"
    if isinstance(info.default, bool):
        return f"`{str(info.default).lower()}`"
    if isinstance(info.default, float):
        return f"`{info.default:g}`"  # 20, not 20.0: what one would write in the variable
    return f"`{info.default}`"


def _cell(text: str) -> str:
    # A `|` would end the table cell.
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    """The Markdown table: one row per `JOBCLOUD_*` variable, in the model's order."""
    rows = ["| Setting | Type | Default | Used by | Meaning |", "|---|---|---|---|---|"]
    for name, info in settings_fields():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        shown_type = str(extra.get("shown_type") or type_text(info.annotation))
        shown_default = str(extra.get("shown_default") or default_text(info))
        cells = [f"`{name}`", shown_type, shown_default, str(extra.get("used_by", "")), info.description or ""]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def render(page: str) -> str:
    """``page`` with the generated part replaced by the current table. ValueError if the page
    lacks the markers."""
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the page has no generated part: add the lines\n{BEGIN}\n{END}")
    return f"{head}{BEGIN}\n{settings_table()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, compare) the page; 0 when it is up to date."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", type=Path, default=DEFAULT_PAGE, help="the page (default: docs/settings.md)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    try:
        page = args.page.read_text(encoding="utf-8")
        new = render(page)
    except (OSError, ValueError) as exc:
        print(f"{args.page}: {exc}", file=sys.stderr)
        return 2
    if new == page:
        return 0
    if args.check:
        print(f"{args.page} is out of date; regenerate it: {COMMAND} {args.page}", file=sys.stderr)
        return 1
    args.page.write_text(new, encoding="utf-8")
    print(f"{args.page}: settings table updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
