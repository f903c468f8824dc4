"""Execute notebooks/quickstart.ipynb top to bottom on the CPU so it cannot rot (it needs the default model)."""

from __future__ import annotations

import os
import pathlib

import pytest

from jaxllm.default_model import INSTALL_HINT, default_model_available

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def execute_notebook(path: pathlib.Path, timeout: int = 900):
    """Run every cell in a fresh kernel whose working directory is the notebook's folder and whose imports see
    this checkout (PYTHONPATH), forced onto the CPU. Returns the executed notebook."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "JAX_PLATFORMS": "cpu"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel subprocess inherits the environment
    try:
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(chunks)


def test_notebook_is_saved_with_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "save the notebook executed, with outputs"
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    assert "Paris" in _text(nb)


@pytest.mark.slow
@pytest.mark.skipif(not default_model_available(), reason=f"default model not installed ({INSTALL_HINT})")
def test_quickstart_notebook_runs_top_to_bottom():
    nb = execute_notebook(NOTEBOOK)  # raises CellExecutionError naming the failing cell
    text = _text(nb)
    assert "Paris" in text and "logits" in text


@pytest.mark.slow
@pytest.mark.skipif(not default_model_available(), reason=f"default model not installed ({INSTALL_HINT})")
def test_rl_loop_notebook_updates_weights_without_recompiling():
    nb = execute_notebook(REPO / "notebooks" / "rl_loop.ipynb")
    text = _text(nb)
    assert "outputs changed: True" in text and "compiled programs constant after round 0: True" in text
