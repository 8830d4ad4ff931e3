"""The code's layers import downward only, without cycles, and no private name crosses a module.

Layers, lowest first (a module may import its own layer and those below it):

    blocks < flows < deployments.worker < .server < .pools < .imaging < .notify < .jobs < .deploy
           < .http_api < .cli         (all under the namespace `jobcloud`)

The root package `jobcloud` (the public Python API) sits with the CLI at the top: nothing of
ours imports it. Every import of every module under jobcloud/, blocks/, flows/ and deployments/ counts, also those inside
functions and under `if TYPE_CHECKING:`. Cycles are looked for among module-level imports
(those inside functions run later, when every module is loaded).
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {"jobcloud": "jobcloud", "blocks": "jobcloud.blocks", "flows": "jobcloud.flows", "deployments": "jobcloud.deployments"}
LAYERS = tuple(
    f"jobcloud.{layer}"
    for layer in (
        "blocks",
        "flows",
        "deployments.worker",
        "deployments.server",
        "deployments.pools",
        "deployments.imaging",
        "deployments.notify",
        "deployments.jobs",
        "deployments.deploy",
        "deployments.http_api",
        "deployments.cli",
    )
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (ours), resolved
    names: tuple[str, ...]  # names taken from it (`from x import a, b`)
    line: int
    top: bool  # at module level (not inside a function)


def module_name(path: Path) -> str:
    folder, *parts = path.relative_to(ROOT).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[folder], *parts])


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that ``name`` (a module, or a name inside one) is."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path], text: str | None = None) -> list[Import]:
    """The imports of ours in ``path`` (or in ``text``, as if it were that file)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text, str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = resolve(alias.name, modules)
                    if target:
                        found.append(Import(module, target, (), child.lineno, top))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    # `from pkg import mod` imports the module pkg.mod; `from mod import name` a name.
                    sub = f"{base}.{alias.name}"
                    if sub in modules:
                        found.append(Import(module, sub, (), child.lineno, top))
                    else:
                        target = resolve(base, modules)
                        if target:
                            found.append(Import(module, target, (alias.name,), child.lineno, top))
            visit(child, inner)

    visit(tree, True)
    return found


def layer_of(module: str) -> int:
    best = -1
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            best = i
    if module == "jobcloud":
        return len(LAYERS) - 1  # the public API: above everything but the CLI's equal
    if best < 0 and module == "jobcloud.deployments":
        return LAYERS.index("jobcloud.deployments.worker")  # the package's own docstring
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def all_imports() -> list[Import]:
    modules = our_modules()
    return [i for m, p in modules.items() for i in imports_of(m, p, modules)]


def upward(imports: list[Import]) -> list[str]:
    return [
        f"{i.module}:{i.line} imports {i.target} ({LAYERS[layer_of(i.target)]} is above {LAYERS[layer_of(i.module)]})"
        for i in imports
        if layer_of(i.target) > layer_of(i.module)
    ]


def cycles(imports: list[Import]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.top and i.target != i.module:
            graph.setdefault(i.module, set()).add(i.target)
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return found


def private_names(imports: list[Import]) -> list[str]:
    return [
        f"{i.module}:{i.line} imports {name} from {i.target}"
        for i in imports
        for name in i.names
        if name.startswith("_") and i.target != i.module
    ]


def test_the_scan_sees_the_imports() -> None:
    imports = all_imports()
    pairs = {(i.module, i.target) for i in imports}
    # One at module level, one inside a function, one relative to nothing: the parser works.
    assert ("jobcloud.blocks.store.job_store", "jobcloud.blocks.errors") in pairs
    assert ("jobcloud.deployments.cli.run", "jobcloud.deployments.jobs.run_local") in pairs
    assert ("jobcloud", "jobcloud.deployments.jobs.client") in pairs
    assert len(imports) > 200


def test_no_layer_imports_a_layer_above_it() -> None:
    assert upward(all_imports()) == []


def test_no_import_cycles_at_module_level() -> None:
    assert cycles(all_imports()) == []


def test_no_private_name_crosses_a_module() -> None:
    assert private_names(all_imports()) == []


def test_every_package_is_installed() -> None:
    """pyproject.toml lists the packages, every one under `jobcloud` (images/ is mapped in as
    `jobcloud.images`)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {module_name(p) for folder in PACKAGES for p in (ROOT / folder).rglob("__init__.py")}
    assert set(config["packages"]) == folders | {"jobcloud.images"}
    assert all(p == "jobcloud" or p.startswith("jobcloud.") for p in config["packages"])
    assert config["package-dir"] == {**{v: k for k, v in PACKAGES.items()}, "jobcloud.images": "images"}


@pytest.mark.parametrize(
    "module, source, check",
    [
        ("jobcloud.blocks.keys", "from jobcloud.flows.catalog import Catalog\n", upward),
        ("jobcloud.flows.job", "def f():\n    from jobcloud.deployments.jobs.submit import submit\n", upward),
        ("jobcloud.deployments.jobs.submit", "from jobcloud.deployments.cli.run import report\n", upward),
        ("jobcloud.deployments.worker.fast_worker", "import jobcloud.deployments.pools.work_pools\n", upward),
        ("jobcloud.deployments.pools.types", "from jobcloud.deployments.jobs import submit\n", upward),
        ("jobcloud.flows.job", "import jobcloud\n", upward),
        ("jobcloud.blocks.errors", "from jobcloud.blocks.keys import check_key\n", cycles),
        ("jobcloud.flows.job", "from jobcloud.blocks.transfer.local import _kernel_copy\n", private_names),
        (
            "jobcloud.flows.job",
            "from ..blocks.transfer import local\nfrom jobcloud.blocks.transfer.local import _READ_FLAGS\n",
            private_names,
        ),
    ],
)
def test_each_check_fails_on_a_bad_import(module: str, source: str, check) -> None:
    """Each check goes red when such an import is added to a module (and is green without)."""
    modules = our_modules()
    imports = all_imports()
    added = imports_of(module, modules[module], modules, text=source)
    assert added, f"the scan did not see {source!r}"
    assert check(imports) == []
    assert check(imports + added), f"{check.__name__} did not see {source!r} in {module}"
