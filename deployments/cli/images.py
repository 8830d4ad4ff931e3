"""`jobcloud images`: build the images of images/ with the engine that is there, list them."""

from __future__ import annotations

import os
from typing import List

import typer

from deployments.cli.output import err, out, print_json

# The builder (the Docker SDK) is imported inside the commands: `jobcloud --help` stays quick.

images_app = typer.Typer(help="Build and list the images of images/ (images/images.yaml).", no_args_is_help=True)


@images_app.command("build")
def build_command(
    names: List[str] = typer.Argument(None, help="Images to build (default: those the catalog refers to)."),
    force: bool = typer.Option(False, "--force", help="Rebuild the named images even if they are up to date."),
    public: bool = typer.Option(False, "--public", help="Use public base images (a registry is reachable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only what was built, not the build output."),
) -> None:
    """Build images and the bases they need; an image that is up to date is skipped.

    Where no registry is reachable the bases are made here (busybox from the host, a Debian
    Python base with debootstrap) and torch comes from the local wheel in $PIP_FIND_LINKS.
    """
    from deployments.server.images_build import build

    if public:
        os.environ["JOBCLOUD_IMAGES_PUBLIC"] = "1"

    def log(message: str) -> None:
        if message.startswith("  ") and quiet:
            return
        err.print(message, markup=False, highlight=False, style="dim" if message.startswith("  ") else None)

    built = build(list(names or []) or None, force=force, log=log)
    out.print(f"built {len(built)} image(s)" + (": " + ", ".join(built) if built else " (all up to date)"), highlight=False)


@images_app.command("ls")
def ls_command(json_: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The images images/ can build: tag, whether the engine has it, whether the catalog uses it."""
    from deployments.server.images_build import catalog_images, engine_client, has_image, load_recipes

    recipes = load_recipes()
    used, _ = catalog_images(recipes)
    client = engine_client()
    rows = [
        {"name": n, "tag": r["tag"], "present": has_image(client, r["tag"]), "in_catalog": n in used, "needs": r.get("needs", [])}
        for n, r in recipes.items()
    ]
    if json_:
        print_json({"images": rows})
        return
    from rich.table import Table

    table = Table("name", "tag", "present", "catalog", "needs")
    for r in rows:
        table.add_row(r["name"], r["tag"], "yes" if r["present"] else "no", "yes" if r["in_catalog"] else "", ", ".join(r["needs"]))
    out.print(table)
