"""The runtime never imports the benchmark package or the scripts: what serving needs (parameter and byte counts,
card peaks) lives in runtime modules the benchmark imports, not the other way round. Only the ``jaxllm bench``
subcommand of the command line loads ``jaxllm.bench``."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN = ("jaxllm.bench", "scripts")
ALLOWED = {"jaxllm/cli.py"}  # `jaxllm bench` runs the benchmark


def module_name(path: pathlib.Path) -> str:
    """The dotted name of a file under jaxllm/ or ops/ (installed as jaxllm.ops)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = ("jaxllm", *parts) if parts[0] == "ops" else parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, relative imports resolved
    (``from jaxllm import bench`` counts as jaxllm.bench)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    mods = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            mods.add(module)
            mods.update(f"{module}.{a.name}" for a in node.names)
    return mods


def runtime_files() -> list[pathlib.Path]:
    """Every Python file of the installed package except the benchmark's own."""
    files = sorted((ROOT / "jaxllm").rglob("*.py")) + sorted((ROOT / "ops").rglob("*.py"))
    return [p for p in files if not p.relative_to(ROOT).as_posix().startswith("jaxllm/bench/")]


def test_runtime_imports_no_benchmark_or_scripts():
    files = runtime_files()
    assert len(files) > 50
    found = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        for mod in imported_modules(path):
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN):
                found.append(f"{rel} imports {mod}")
    assert not found, "\n".join(found)
