"""`jobcloud images`: build the images of images/ with the engine that is there, list them, and
wrap any image with Python so that it can run in-container."""

from __future__ import annotations

import os

import typer

from jobcloud.deployments.cli.output import err, out, print_json

# The builder (the Docker SDK) is imported inside the commands: `jobcloud --help` stays quick.

images_app = typer.Typer(
    help="Build and list the images of images/ (images/images.yaml); wrap an image for in-container pools.",
    no_args_is_help=True,
)


@images_app.command("build")
def build_command(
    names: list[str] = typer.Argument(None, help="Images to build (default: those the catalog refers to)."),
    force: bool = typer.Option(False, "--force", help="Rebuild the named images even if they are up to date."),
    public: bool = typer.Option(False, "--public", help="Use public base images (a registry is reachable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only what was built, not the build output."),
) -> None:
    """Build images and the bases they need; an image that is up to date is skipped.

    Where no registry is reachable the bases are made here (busybox from the host, a Debian
    Python base with debootstrap) and torch comes from the local wheel in $PIP_FIND_LINKS.
    """
    from jobcloud.blocks.settings import env_name
    from jobcloud.deployments.imaging.build import build

    if public:
        os.environ[env_name("images_public")] = "1"

    def log(message: str) -> None:
        if message.startswith("  ") and quiet:
            return
        err.print(message, markup=False, highlight=False, style="dim" if message.startswith("  ") else None)

    built = build(list(names or []) or None, force=force, log=log)
    out.print(f"built {len(built)} image(s)" + (": " + ", ".join(built) if built else " (all up to date)"), highlight=False)


@images_app.command("ls")
def ls_command(json_: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The images images/ can build: tag, whether the engine has it, whether the catalog uses it."""
    from jobcloud.deployments.imaging.build import catalog_images, engine_client, has_image, load_recipes

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


@images_app.command("wrap")
def wrap_command(
    image: str = typer.Argument(..., help="The application's image (it needs Python 3 on its PATH)."),
    tag: str | None = typer.Option(None, "--tag", "-t", help="Tag of the wrapped image (default: IMAGE's tag + '-jobcloud')."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the wrapped image is up to date."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the steps, not the build output."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object (image, tag, built, seconds)."),
) -> None:
    """Make IMAGE able to run in-container: JobCloud in its own venv at /opt/jobcloud/venv.

    The venv is made with the image's own python; the image's PATH, ENV, ENTRYPOINT, CMD,
    WORKDIR, USER and Python packages stay as they are. Use the printed tag as the entrypoint's
    image_url on docker, kubernetes, ECS, ... pools.
    """
    from jobcloud.deployments.imaging.wrap import wrap

    def log(message: str) -> None:
        if message.startswith("  ") and (quiet or json_):
            return
        err.print(message, markup=False, highlight=False, style="dim" if message.startswith("  ") else None)

    result = wrap(image, tag=tag, force=force, log=log)
    if json_:
        print_json(result.model_dump())
        return
    if result.built:
        out.print(f"wrapped {image} as {result.tag} in {result.seconds:.0f} s", highlight=False)
    elif result.tag == image:
        out.print(f"{image} already runs in-container: use it as it is", highlight=False)
    else:
        out.print(f"{result.tag} is up to date", highlight=False)
