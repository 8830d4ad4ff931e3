"""Every command in README.md and docs/*.md is checked, so the documentation cannot drift away
from the code unnoticed.

Commands are the lines of ```bash, ```sh, ```shell and ```console code blocks (in console
blocks, the lines after a `$ ` prompt). Comment lines and `# output` lines are ignored,
backslash continuations are joined, trailing comments and leading `VAR=value` assignments are
stripped, and `a && b`, `a | b`, `a; b` are checked part by part. Each command is one test,
named by its file and line:

- `jobcloud ...` (or `python -m jobcloud.deployments.cli ...`): the command path exists and its options
  and arguments parse (click's `make_context` on the CLI app; where the app cannot be imported
  in-process, `python -m jobcloud.deployments.cli <path> --help` in a subprocess, and every option the
  command uses must appear in that help).
- `prefect ...`: `python -m prefect <path> --help` exits 0 and names every option the command
  uses; a module given with `-m` must be importable.
- `scripts/x.sh`: the file exists and is executable; `source F`: F exists.
- `python -m M`: M is importable (`importlib.util.find_spec`); `python F.py --opt ...`: F exists
  and defines every option used; `pytest PATH...`: each path exists.
- `eval "$(CMD)"`: CMD is checked as a command.
- anything else: its program must be in `ALLOWED`, with the reason it is not run here.

Python code blocks are checked too: every `import` / `from ... import` of a JobCloud package
must name an importable module under `jobcloud` (a pre-namespace `blocks`, `flows` or
`deployments` import fails).

A command that documents something not there yet is listed in `PENDING` with the reason: it
is an xfail with strict=True, so the test goes red the day it starts passing and the entry
must be removed. Nothing is skipped.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
OUR_PACKAGES = {"jobcloud", "blocks", "flows", "deployments"}
HELP_TIMEOUT_S = 120

# Programs documented but not run or parsed by this test, each with the reason.
ALLOWED = {
    "export": "sets shell variables; nothing to check",
    "cd": "changes the shell's folder",
    "pip": "installs packages (done by scripts/setup.sh in CI)",
    "docker": "needs a Docker engine; CI has none (Podman's API only)",
    "podman": "needs the engine itself",
    "curl": "talks to a running server",
    "systemctl": "manages a system service on a worker host",
    "sudo": "administers the server host (PostgreSQL from the distribution's packages)",
}

# Commands that document what is on its way (issue 9), as "file: command" -> reason. Strict
# xfails: once a command works, its test fails until its entry is removed here.
PENDING: dict[str, str] = {}

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_SEPARATORS = {"&&", "||", "|", ";", "&"}


@dataclass(frozen=True)
class Command:
    file: str  # relative to the repository root
    line: int  # first line of the command in the file
    text: str  # the command as written (continuations joined)
    lang: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _strip_comment(line: str) -> str:
    """Drop a shell comment: a `#` outside quotes at the start of a word."""
    quote = None
    prev = " "
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev.isspace():
            return line[:i].rstrip()
        prev = ch
    return line.rstrip()


def extract(path: Path) -> tuple[list[Command], list[tuple[int, str]]]:
    """The shell commands and the Python lines (line number, text) in a Markdown file."""
    rel = str(path.relative_to(ROOT))
    commands: list[Command] = []
    python: list[tuple[int, str]] = []
    lang = None  # language of the open fence; None outside a fence
    fence = ""
    pending: list[str] = []
    start = 0
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(raw)
        if lang is None:
            if m:
                fence, lang = m.group(2), (m.group(3) or "").lower()
            continue
        if m and m.group(2).startswith(fence) and not m.group(3):
            if pending:
                raise AssertionError(f"{rel}:{start}: a backslash continuation runs into the end of its block")
            lang = None
            continue
        if lang == "python":
            python.append((no, raw))
            continue
        if lang not in SHELL_LANGS:
            continue
        line = raw.strip()
        if not pending:
            if lang == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            if not line or line.startswith("#"):
                continue
            start = no
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        text = _strip_comment(" ".join(pending))
        pending = []
        if text:
            commands.append(Command(rel, start, text, lang))
    if lang is not None:
        raise AssertionError(f"{rel}: a code block is never closed")
    return commands, python


def split_command(text: str) -> list[list[str]]:
    """The simple commands of a line, each without its leading VAR=value assignments."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token in _SEPARATORS:
            parts.append([])
        else:
            parts[-1].append(token)
    out = []
    for part in parts:
        while part and _ASSIGNMENT.match(part[0]):
            part = part[1:]
        if part:
            out.append(part)
    return out


def _options(args: list[str]) -> list[str]:
    """The option names a command uses (`--x`, `-x`; `--x=v` gives `--x`)."""
    return [a.split("=", 1)[0] for a in args if re.match(r"^--?[A-Za-z]", a)]


def _missing_options(args: list[str], text: str) -> list[str]:
    return [o for o in _options(args) if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]


# --- jobcloud ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _jobcloud_click():
    """The click command of `jobcloud`, or None where the CLI cannot be imported here."""
    import typer

    for module in ("jobcloud.deployments.cli", "jobcloud.deployments.cli.main"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        app = getattr(mod, "app", None)
        if isinstance(app, typer.Typer):
            return typer.main.get_command(app)
    return None


def check_jobcloud(args: list[str]) -> str | None:
    import click
    import typer

    cmd = _jobcloud_click()
    if cmd is None:
        return check_jobcloud_help(args)
    # Typer 0.29 carries its own copy of click: its errors derive from typer.TyperException,
    # and its groups are known by resolve_command, not by click.Group.
    usage_errors = (typer.TyperException, click.exceptions.ClickException)
    exits = (typer.Exit, click.exceptions.Exit)
    try:
        ctx = cmd.make_context("jobcloud", list(args))
        while hasattr(ctx.command, "resolve_command"):
            protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
            rest = [*protected, *ctx.args]
            if not rest:
                return f"`{ctx.command_path}` needs a sub-command"
            name, sub, rest = ctx.command.resolve_command(ctx, rest)
            ctx = sub.make_context(name, rest, parent=ctx)
    except exits as exc:  # --help and the like
        code = getattr(exc, "exit_code", 0)
        return None if code == 0 else f"exits {code} while parsing"
    except usage_errors as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"does not parse: {message or 'a sub-command or an argument is missing (it prints its help)'}"
    return None


def check_jobcloud_help(args: list[str]) -> str | None:
    path = []
    for a in args:
        if a.startswith("-"):
            break
        path.append(a)
    return _help_check((sys.executable, "-m", "jobcloud.deployments.cli", *path), args)


# --- prefect -------------------------------------------------------------------------------


@functools.cache
def _help(argv: tuple[str, ...]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DO_NOT_TRACK": "1", "COLUMNS": "200", "NO_COLOR": "1"}
    try:
        proc = subprocess.run([*argv, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=HELP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return -1, f"no answer to --help in {HELP_TIMEOUT_S} s"
    return proc.returncode, proc.stdout + proc.stderr


def _help_check(argv: tuple[str, ...], args: list[str]) -> str | None:
    rc, text = _help(argv)
    if rc != 0:
        return f"`python {' '.join(argv[1:])} --help` exits {rc}: {text.strip()[-400:]}"
    missing = _missing_options(args, text)
    if missing:
        return f"`python {' '.join(argv[1:])} --help` does not name {', '.join(missing)}"
    return None


def check_prefect(args: list[str]) -> str | None:
    path = []
    for a in args:
        if a.startswith("-"):
            break
        path.append(a)
    problem = _help_check((sys.executable, "-m", "prefect", *path), args)
    if problem:
        return problem
    for flag, value in itertools.pairwise(args):
        if flag in ("-m", "--module"):
            problem = check_module(value)
            if problem:
                return problem
    return None


# --- python, scripts, files ----------------------------------------------------------------


def check_module(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        return f"module {name} cannot be found: {exc}"
    return None if spec is not None else f"module {name} is not importable"


def check_python(args: list[str]) -> str | None:
    if not args:
        return "a bare python (interactive) is not a documented command"
    if args[0] == "-m":
        if len(args) < 2:
            return "`python -m` without a module"
        module, rest = args[1], args[2:]
        if module == "jobcloud.deployments.cli":
            return check_jobcloud(rest)
        if module == "prefect":
            return check_prefect(rest)
        if module == "pytest":
            return check_pytest(rest)
        return check_module(module)
    if args[0].startswith("-"):
        return f"python option {args[0]} is not understood by this test"
    script = ROOT / args[0]
    if not script.is_file():
        return f"{args[0]} does not exist"
    source = script.read_text(encoding="utf-8")
    missing = [o for o in _options(args[1:]) if f'"{o}"' not in source and f"'{o}'" not in source]
    return f"{args[0]} defines no option {', '.join(missing)}" if missing else None


def check_pytest(args: list[str]) -> str | None:
    missing = [a for a in args if not a.startswith("-") and not (ROOT / a.split("::")[0]).exists()]
    return f"no such test path: {', '.join(missing)}" if missing else None


def check_script(program: str) -> str | None:
    path = ROOT / program
    if not path.is_file():
        return f"{program} does not exist"
    if not os.access(path, os.X_OK):
        return f"{program} is not executable"
    return None


def check_simple(argv: list[str]) -> str | None:
    program, args = argv[0], argv[1:]
    base = program.removeprefix(".venv/bin/")
    if base == "jobcloud":
        return check_jobcloud(args)
    if base == "prefect":
        return check_prefect(args)
    if base in ("python", "python3"):
        return check_python(args)
    if base == "pytest":
        return check_pytest(args)
    if base in ("source", "."):
        return None if args and (ROOT / args[0]).exists() else f"nothing to source at {args[:1]}"
    if base == "eval":
        inner = re.fullmatch(r"\$\((.*)\)", " ".join(args))
        if not inner:
            return "eval of something other than one $(command)"
        return check_line(inner.group(1))
    if program.startswith(("scripts/", "./scripts/")) or program.endswith(".sh"):
        return check_script(program)
    if base in ALLOWED:
        return None
    return f"`{program}` is neither checked by this test nor in its ALLOWED list"


def check_line(text: str) -> str | None:
    try:
        parts = split_command(text)
    except ValueError as exc:
        return f"not valid shell: {exc}"
    for argv in parts:
        problem = check_simple(argv)
        if problem:
            return problem
    return None


# --- the tests -----------------------------------------------------------------------------


def _collect():
    commands, imports = [], []
    for path in DOCS:
        found, python = extract(path)
        commands.extend(found)
        rel = str(path.relative_to(ROOT))
        for no, line in python:
            m = re.match(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", line)
            if m:
                module = m.group(1) or m.group(2)
                if module.split(".")[0] in OUR_PACKAGES:
                    imports.append(Command(rel, no, module, "python"))
    return commands, imports


COMMANDS, IMPORTS = _collect()


def _params(items):
    out = []
    for c in items:
        key = f"{c.file}: {c.text}"
        marks = [pytest.mark.xfail(reason=PENDING[key], strict=True)] if key in PENDING else []
        out.append(pytest.param(c, id=f"{c.file}:{c.line}", marks=marks))
    return out


def test_the_docs_have_commands():
    """The extraction itself works: the README's two commands are found."""
    texts = {c.text.split()[0] for c in COMMANDS if c.file == "README.md"}
    assert {"scripts/main-job.sh", "scripts/test.sh"} <= texts, texts
    assert len(COMMANDS) > 50, len(COMMANDS)


def test_pending_entries_name_real_commands():
    """A PENDING entry whose command left the docs would hide nothing; it must go."""
    keys = {f"{c.file}: {c.text}" for c in [*COMMANDS, *IMPORTS]}
    stale = sorted(set(PENDING) - keys)
    assert not stale, f"PENDING names commands no longer in the docs: {stale}"


@pytest.mark.parametrize("command", _params(COMMANDS))
def test_documented_command(command: Command):
    problem = check_line(command.text)
    assert problem is None, f"{command.where}\n  -> {problem}"


@pytest.mark.parametrize("command", _params(IMPORTS))
def test_documented_python_import(command: Command):
    # The repository root is on sys.path in the tests, so `flows.x` would import here but not
    # in an install: only `jobcloud.` names are right.
    if command.text.split(".")[0] != "jobcloud":
        problem = f"JobCloud installs as one package: import jobcloud.{command.text}"
    else:
        problem = check_module(command.text)
    assert problem is None, f"{command.file}:{command.line}: import {command.text}\n  -> {problem}"


def test_relative_links_point_at_files():
    """Links between the README and the docs pages (and to images) name files that exist."""
    broken = []
    for path in DOCS:
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                    continue
                if not (path.parent / target.split("#", 1)[0]).exists():
                    broken.append(f"{path.relative_to(ROOT)}:{no}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
