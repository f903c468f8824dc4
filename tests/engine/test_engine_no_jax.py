"""jaxllm/engine (and sampling_params / outputs) must never import jax: checked statically and at runtime."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST_FILES = sorted((ROOT / "jaxllm" / "engine").glob("*.py")) + [
    ROOT / "jaxllm" / "sampling_params.py",
    ROOT / "jaxllm" / "outputs.py",
]
FORBIDDEN = (
    "jax",
    "jaxlib",
    "flax",
    "torch",
    "jaxllm.runner",
    "jaxllm.models",
    "jaxllm.weights",
    "jaxllm.parallel",
    "jaxllm.ops",
    "jaxllm.llm",
)


def imported_modules(path: pathlib.Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
    return mods


def test_engine_files_import_no_jax_statically():
    assert len(HOST_FILES) >= 9
    for path in HOST_FILES:
        for mod in imported_modules(path):
            assert not any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN), (
                f"{path.name} imports {mod}"
            )


def test_engine_runs_with_jax_unimportable():
    code = textwrap.dedent(f"""
        import importlib.abc, sys, types
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("jax", "jaxlib", "flax", "torch"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        # a bare jaxllm package, so jaxllm/__init__.py (which may load models) is not run
        pkg = types.ModuleType("jaxllm"); pkg.__path__ = [{str(ROOT / "jaxllm")!r}]
        sys.modules["jaxllm"] = pkg
        import pkgutil, importlib
        import jaxllm.engine
        for m in pkgutil.iter_modules(jaxllm.engine.__path__):
            importlib.import_module("jaxllm.engine." + m.name)
        from jaxllm.engine import LLMEngine, RunnerOutput
        from jaxllm.sampling_params import SamplingParams
        class R:
            def execute(self, batch):
                return RunnerOutput(sampled={{s.seq_id: 1 for s in batch.seqs if s.sample}})
        eng = LLMEngine(R(), num_blocks=8, block_size=4, max_num_seqs=2, max_num_batched_tokens=8,
                        max_model_len=16, vocab_size=4)
        eng.add_request("a", [1, 2, 3], SamplingParams(max_tokens=3))
        outs = []
        while eng.has_unfinished_requests():
            outs += [o for o in eng.step() if o.finished]
        assert list(outs[0].outputs[0].token_ids) == [1, 1, 1]
        assert not any(k.split(".")[0] in ("jax", "flax") for k in sys.modules)
        print("OK")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "OK", res.stderr
