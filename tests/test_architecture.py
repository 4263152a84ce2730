"""The package's shape: one ``luvnet`` namespace, dependencies pointing one way, no import
cycle, small modules, and a wheel that installs ``luvnet`` as its only top-level name."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Import name of each folder, as pyproject.toml's package-dir maps it.
FOLDERS = {
    "luvnet": "luvnet",
    "luvnet.engine": "engine",
    "luvnet.streamer": "streamer",
    "luvnet.plugins": "plugins",
    "luvnet.bench": "bench",
}
# Each room and the rooms it may import (besides itself). "luvnet.engine" alone is the
# engine's root modules (errors, files, runtime, progress), which everything may use.
ALLOWED: dict[str, set[str]] = {
    "luvnet.engine": set(),
    "luvnet.engine.model": {"luvnet.engine"},
    "luvnet.engine.data": {"luvnet.engine", "luvnet.engine.model"},
    "luvnet.engine.backends": {"luvnet.engine", "luvnet.engine.model"},
    "luvnet.engine.evaluation": {"luvnet.engine", "luvnet.engine.model", "luvnet.engine.data"},
    "luvnet.engine.training": {
        "luvnet.engine",
        "luvnet.engine.model",
        "luvnet.engine.data",
        "luvnet.engine.evaluation",
    },
}
ENGINE_ROOMS = set(ALLOWED)
ALLOWED["luvnet.streamer"] = ENGINE_ROOMS
ALLOWED["luvnet.plugins"] = ENGINE_ROOMS | {"luvnet.streamer"}
ALLOWED["luvnet.bench"] = ENGINE_ROOMS | {"luvnet.streamer", "luvnet.plugins"}
ALLOWED["luvnet.commands"] = ENGINE_ROOMS | {"luvnet.streamer", "luvnet.plugins", "luvnet.bench"}
ALLOWED["luvnet"] = ALLOWED["luvnet.commands"] | {"luvnet.commands"}  # the dispatcher
MAX_LINES = 400
REASON = "# Over 400 lines because"


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``, which never run."""
    found: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at run time, anywhere in the file (lazy
    imports too: a cycle through a function-level import is still a cycle in the design)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from luvnet.x import y": an edge to the submodule y where it is one, else to
                # luvnet.x. (A package's __init__, which runs first, is not counted as an edge.)
                candidates = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                    for a in node.names
                ]
            else:
                continue
            for candidate in candidates:
                # "import luvnet.a.b" also runs luvnet.a; the edge that matters is the deepest.
                while candidate and candidate not in known:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def room(module: str) -> str:
    """The room a module lives in: an engine sub-package, or a top-level part of luvnet."""
    parts = module.split(".")
    if parts[:2] == ["luvnet", "engine"]:
        sub = ".".join(parts[:3])
        return sub if sub in ALLOWED else "luvnet.engine"
    if len(parts) >= 2 and ".".join(parts[:2]) in ALLOWED:
        return ".".join(parts[:2])
    return "luvnet"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_sees_one() -> None:
    # The checker itself: a lazy two-module cycle like overlay <-> stream is found.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_dependencies_point_one_way() -> None:
    wrong = [
        f"{source} imports {target} ({room(source)} may use only {sorted(ALLOWED[room(source)])})"
        for source, targets in import_graph().items()
        for target in sorted(targets)
        if room(target) != room(source) and room(target) not in ALLOWED[room(source)]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_argparse_below_the_command_layer() -> None:
    users = [
        name
        for name, path in modules().items()
        if room(name) not in ("luvnet", "luvnet.commands")
        and any(
            isinstance(node, ast.Import | ast.ImportFrom)
            and "argparse"
            in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module])
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    ]
    assert not users, f"argparse belongs in luvnet.commands only; used in {users}"


def test_modules_are_small_or_say_why() -> None:
    long = []
    for path in modules().values():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not any(line.startswith(REASON) for line in lines[:40]):
            long.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
    assert not long, f"over {MAX_LINES} lines without a '{REASON} ...' line at the top: {long}"


def test_every_package_folder_is_installed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    assert config["tool"]["setuptools"]["package-dir"] == FOLDERS
    on_disk = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert on_disk == listed, (
        f"pyproject.toml [tool.setuptools] packages: missing {sorted(on_disk - listed)}, "
        f"stale {sorted(listed - on_disk)}"
    )


@pytest.mark.slow
def test_wheel_installs_only_luvnet(tmp_path: Path) -> None:
    """``pip install .`` adds ``luvnet`` as its only top-level import name; ``import engine``
    fails there while ``import luvnet.engine`` works."""
    # Build from a copy: pip builds in the source tree, and the checkout stays as it was.
    source = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in FOLDERS.values():
        shutil.copytree(REPO / folder, source / folder, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    top = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")} - {"bin"}
    assert top == {"luvnet"}, f"top-level names installed: {sorted(top)}"
    assert (target / "luvnet" / "engine" / "demo_model" / "model.safetensors").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = (
        "import importlib.util, luvnet.engine, luvnet.streamer, luvnet.plugins, luvnet.bench\n"
        "from luvnet.engine.model.checkpoint import load_checkpoint\n"
        "for bare in ('engine', 'streamer', 'plugins', 'bench'):\n"
        "    assert importlib.util.find_spec(bare) is None, bare\n"
        "print(luvnet.engine.__file__)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().startswith(str(target)), run.stdout
