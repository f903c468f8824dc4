"""Pieces of the CPU start-up path: flax imported without IPython when no IPython shell can run
(jaxllm.flax_import), the KV cache zeroed on a thread while the programs compile (KVCachePlan.start_zeroing), and
a GGUF file's tokenizer loading while they compile (grammar_capable_before_loading)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from jaxllm import LLM, SamplingParams


def _run(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_flax_is_imported_without_ipython_and_ipython_still_imports_after():
    pytest.importorskip("IPython")
    _run("import sys\n"
         "from jaxllm.flax_import import import_flax_nnx\n"
         "import_flax_nnx()\n"
         "assert 'flax.nnx' in sys.modules and 'IPython' not in sys.modules, sorted(sys.modules)[:5]\n"
         "import IPython\n"
         "assert IPython.get_ipython() is None\n")


def test_an_imported_ipython_is_kept_as_it_is():
    pytest.importorskip("IPython")
    _run("import sys, IPython\n"
         "from jaxllm.flax_import import import_flax_nnx\n"
         "import_flax_nnx()\n"
         "assert sys.modules['IPython'] is IPython and 'flax.nnx' in sys.modules\n")


def test_cpu_cache_is_zeroed_on_a_thread_and_used(llama_dir):
    llm = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=16, num_gpu_blocks_override=24,
              skip_tokenizer_init=True)
    runner = llm.llm_engine.runner
    plan = runner.cache_plan
    assert plan._zeroing is None  # taken by the allocation
    with runner.device_lock:  # the background thread's first runs take the cache (donated) and give it back
        assert all(c.shape[1] == 24 and not np.asarray(c).any() for c in runner.kv_caches)
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    out = llm.generate([{"prompt_token_ids": [5, 9, 13, 2]}], params, use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 4

    threads = []
    zeroed = plan._zeroed
    plan._zeroed = lambda: threads.append(threading.current_thread().name) or zeroed()
    plan.start_zeroing()
    assert plan._zeroing is not None and plan._zeroing[0] == 24
    assert all(a.shape[1] == 24 for a in plan.allocate())
    assert threads == ["jaxllm-kv-zero_0"]  # the thread's arrays

    plan.start_zeroing()
    plan.num_blocks = 20  # the plan changed after zeroing began: the started arrays are not used
    arrays = plan.allocate()
    assert plan._zeroing is None
    assert len(arrays) == len(runner.kv_caches) and all(a.shape[1] == 20 and not np.asarray(a).any() for a in arrays)
    assert threads[-1] == "MainThread"  # zeroed again, in the caller
    plan.num_blocks = 24


@pytest.mark.parametrize("kwargs, gguf, known", [
    ({}, True, True),  # a GGUF file's own tokenizer: a fast one, known before it loads
    ({}, False, None),  # a folder's: only the loaded tokenizer tells
    ({"skip_tokenizer_init": True}, True, None),
    ({"tokenizer": "some/folder"}, True, None),
])
def test_grammar_capability_known_before_the_tokenizer_loads(kwargs, gguf, known):
    from jaxllm.engine_args import EngineArgs
    from jaxllm.load import ModelSource, grammar_capable_before_loading

    pytest.importorskip("llguidance")
    args = EngineArgs.from_kwargs({"model": "m", **kwargs})
    assert grammar_capable_before_loading(args, ModelSource("m", None, None, gguf)) is known

