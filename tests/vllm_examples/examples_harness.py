"""The harness of vLLM's ported offline examples (its fixtures are in conftest.py): each script runs as written,
its ``LLM`` class swapped for ``llm_factory``, which adds small shapes and reuses the previous engine when the
arguments match.

Scripts built on ``EngineArgs.add_cli_args`` run as ``__main__`` with a command line (``run_cli``): the shapes
then travel as flags (``SMALL_FLAGS``), as a user would pass them. The others (``run_example``) call ``main()``;
the factory adds ``enforce_eager=True`` and the small shapes unless the script sets them: compiling the full bucket
ladder of the default model takes minutes on a CPU, and the outputs are the same.
"""

from __future__ import annotations

import jaxllm

SMALL = {"enforce_eager": True, "max_num_seqs": 4, "max_num_batched_tokens": 128, "max_model_len": 512}
SMALL_FLAGS = ["--enforce-eager", "--max-num-seqs", "4", "--max-num-batched-tokens", "128",
               "--max-model-len", "512"]
LAST: dict = {}  # the one cached LLM and its arguments
ALIASES: dict[str, str] = {}  # hub ids a script names -> the tiny checkpoint a test built in their place


def llm_factory(model=jaxllm.DEFAULT_MODEL, **kwargs):
    """``jaxllm.LLM`` for the scripts: aliases resolved, small shapes added, the last engine reused."""
    model = ALIASES.get(model, model)
    for name, value in SMALL.items():  # unless the script sets them (None: "derive it", as not set)
        if kwargs.get(name) is None:
            kwargs[name] = value
    key = (model, sorted(kwargs.items(), key=lambda kv: kv[0]))
    if LAST.get("key") != key:
        LAST.clear()  # at most one cached LLM (each holds the model and a KV cache)
        LAST.update(key=key, llm=jaxllm.llm.LLM(model, **kwargs))
    return LAST["llm"]


def cached_llm():
    """The LLM the last script built (to check its outputs against the printed ones)."""
    return LAST["llm"]
