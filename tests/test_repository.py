"""The repository reads as a product: no development diary in what users read, and every relative link in the
Markdown resolves."""

from __future__ import annotations

import os
import pathlib
import re

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PRODUCT = ("README.md", "docs", "ops", "jaxllm", "benchmarks", "scripts")
# numbered work sessions, device calls, round-named files, commit ids: history is in git, reasons in docs/
DIARY = re.compile(r"\bsession [0-9]+|\bcall [0-9]+\b|\b_s[0-9]+_|gpu_s[0-9]+|\bcommit [0-9a-f]{7}",
                   re.IGNORECASE)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def product_files(exts: tuple[str, ...]) -> list[str]:
    out = []
    for top in PRODUCT:
        path = os.path.join(REPO, top)
        if os.path.isfile(path):
            out.append(path)
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            out += [os.path.join(root, f) for f in files if f.endswith(exts)]
    return sorted(out)


def test_no_development_diary_in_the_product():
    found = []
    for path in product_files((".py", ".md", ".sh", ".json", ".txt")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f, 1):
                if DIARY.search(line):
                    found.append(f"{os.path.relpath(path, REPO)}:{i}: {line.strip()[:120]}")
    assert not found, "history narration (write the current state):\n" + "\n".join(found[:20])


@pytest.mark.parametrize("path", product_files((".md",)), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_markdown_links_resolve(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if not resolved.startswith(REPO + os.sep):
            continue  # outside the repository (e.g. the project's shared notes)
        assert os.path.exists(resolved), f"{os.path.relpath(path, REPO)} links to missing {target}"


def test_every_package_is_listed_in_pyproject():
    """pyproject.toml lists packages explicitly (ops/ installs as jaxllm.ops): a package missing there is missing
    from a non-editable install, which only README command 1 would notice."""
    import tomllib

    root = pathlib.Path(REPO)
    with open(root / "pyproject.toml", "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("jaxllm", "jaxllm"), ("ops", "jaxllm.ops")):
        for init in (root / top).rglob("__init__.py"):
            rel = init.parent.relative_to(root / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed
