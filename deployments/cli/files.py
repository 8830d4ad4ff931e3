"""`jobcloud files`: put, ls, get and rm keys in the job store."""

from __future__ import annotations

from pathlib import Path

import typer

from jobcloud.blocks.errors import UserError
from jobcloud.deployments.cli.output import byte_progress, human_size, out, print_json

# The job store (fsspec) is imported inside the commands: `jobcloud --help` stays quick.

files_app = typer.Typer(help="Upload, list, download and remove files in the job store.", no_args_is_help=True)


def _store():
    from jobcloud.blocks.store.factory import store_from_settings

    return store_from_settings()


def names_the_key(locals_: list[Path], raw_dest: str) -> bool:
    """Whether DEST of `files put LOCAL... DEST` is the key of the one file given.

    The rule: exactly one local file, DEST not ending in '/', and DEST's last name is the
    file's own name (`put b.yaml a/b.yaml` stores `a/b.yaml`, never `a/b.yaml/b.yaml`).
    Otherwise DEST is a prefix and each LOCAL keeps its name under it (`put b.yaml config`
    stores `config/b.yaml`, as the command-line contract `files put LOCAL... PREFIX` and
    existing scripts expect).
    """
    if len(locals_) != 1 or raw_dest.endswith("/") or not locals_[0].is_file():
        return False
    return raw_dest.rstrip("/").rsplit("/", 1)[-1] == locals_[0].resolve().name


@files_app.command("put")
def put_command(
    paths: list[str] = typer.Argument(
        ...,
        help="Local files or folders, then DEST: the key prefix to put them under, or the key of a single file.",
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Upload LOCAL... under DEST: a file lands at DEST/<name>, a folder at DEST/<name>/...

    One local FILE whose name is DEST's last name lands at DEST itself: `put b.yaml a/b.yaml`
    stores the key a/b.yaml. A DEST ending in '/' is always a prefix (`put b.yaml a/` stores
    a/b.yaml too).
    """
    from jobcloud.blocks.keys import check_key
    from jobcloud.blocks.store.job_store import local_files

    if len(paths) < 2:
        raise UserError("give at least one local path and then the prefix: jobcloud files put LOCAL... PREFIX")
    *raw_locals, raw_dest = paths
    dest = check_key(raw_dest)
    locals_ = [Path(p) for p in raw_locals]
    for p in locals_:
        if not p.exists():
            raise UserError(f"local path {str(p)!r} does not exist")
        if p.is_symlink():
            raise UserError(f"local path {str(p)!r} is a link; give the file or folder it points to")
        check_key(p.resolve().name)
    store = _store()
    skipped: list[str] = []
    total = sum(f.size for p in locals_ for f in local_files(p))
    records = []
    as_key = names_the_key(locals_, raw_dest)
    if as_key and store.is_dir(dest):
        raise UserError(f"{dest!r} is a folder in the job store; to put the file inside it, give {dest + '/'!r}")
    with byte_progress("uploading", total, enabled=not json_) as advance:
        if as_key:
            records.append(store.upload_file(locals_[0].resolve(), dest, advance))
        else:
            for p in locals_:
                records += store.upload_tree(p.resolve(), dest, advance, skipped, keep_name=True)
    if json_:
        print_json({"uploaded": [r.model_dump() for r in records], "skipped": skipped})
        return
    for r in records:
        out.print(f"{r.key}  {human_size(r.size)}", highlight=False)
    for s in skipped:
        out.print(f"skipped (link or special file): {s}", style="yellow")
    where = dest if as_key else f"under {dest}/"
    out.print(f"{len(records)} files, {human_size(sum(r.size for r in records))} {where}", highlight=False)


@files_app.command("ls")
def ls_command(
    prefix: str = typer.Argument("", help="Key prefix to list (default: the whole store)."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="List every file below."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List keys under PREFIX."""
    store = _store()
    entries = store.list(prefix, recursive=recursive)
    if json_:
        print_json({"store": store.url, "prefix": prefix, "entries": [e.__dict__ for e in entries]})
        return
    for e in entries:
        if e.type == "directory":
            out.print(f"{'-':>10}  {e.key}/", highlight=False)
        else:
            out.print(f"{human_size(e.size):>10}  {e.key}", highlight=False)


@files_app.command("get")
def get_command(
    key: str = typer.Argument(..., help="Key of a file or folder."),
    dest: Path = typer.Argument(..., help="Local folder; the key lands at DIR/<last name of key>."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Download KEY (a file or a folder) into DIR."""
    from jobcloud.blocks.keys import check_key

    key = check_key(key)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{str(dest)!r} exists and is not a folder")
    store = _store()
    store.require(key)
    total = sum(size for _, size in store.files(key))
    dest.mkdir(parents=True, exist_ok=True)
    with byte_progress("downloading", total, enabled=not json_) as advance:
        records = store.download(key, dest, advance)
    if json_:
        print_json({"downloaded": [r.model_dump() for r in records], "to": str(dest / key.rsplit("/", 1)[-1])})
        return
    out.print(f"{len(records)} files, {human_size(sum(r.size for r in records))} -> {dest / key.rsplit('/', 1)[-1]}", highlight=False)


@files_app.command("rm")
def rm_command(
    key: str = typer.Argument(..., help="Key of a file or folder."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Remove a folder and everything in it."),
) -> None:
    """Remove KEY from the job store (a folder needs -r)."""
    n = _store().remove(key, recursive=recursive)
    out.print(f"removed {key} ({n} files)", highlight=False)
