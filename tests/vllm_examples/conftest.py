"""The harness of vLLM's ported offline examples: each script runs as written, its ``LLM`` class swapped for a
factory that adds small shapes and reuses the previous engine when the arguments match.

Scripts built on ``EngineArgs.add_cli_args`` run as ``__main__`` with a command line (``run_cli``): the shapes
then travel as flags (``SMALL``), as a user would pass them. The others (``run_example``) call ``main()``; the
factory adds ``enforce_eager=True`` and the small shapes unless the script sets them: compiling the full bucket
ladder of the default model takes minutes on a CPU, and the outputs are the same.
"""

from __future__ import annotations

import os
import runpy
import sys

import pytest

import jaxllm

HERE = os.path.dirname(__file__)
SMALL = {"enforce_eager": True, "max_num_seqs": 4, "max_num_batched_tokens": 128, "max_model_len": 512}
SMALL_FLAGS = ["--enforce-eager", "--max-num-seqs", "4", "--max-num-batched-tokens", "128",
               "--max-model-len", "512"]
_last: dict = {}
# hub ids a script names -> the tiny checkpoint a test built in their place (``alias_model``)
_ALIASES: dict[str, str] = {}


def _llm_factory(model=jaxllm.DEFAULT_MODEL, **kwargs):
    model = _ALIASES.get(model, model)
    for name, value in SMALL.items():  # unless the script sets them (None: "derive it", as not set)
        if kwargs.get(name) is None:
            kwargs[name] = value
    key = (model, sorted(kwargs.items(), key=lambda kv: kv[0]))
    if _last.get("key") != key:
        _last.clear()  # at most one cached LLM (each holds the model and a KV cache)
        _last.update(key=key, llm=jaxllm.llm.LLM(model, **kwargs))
    return _last["llm"]


def cached_llm():
    """The LLM the last script built (to check its outputs against the printed ones)."""
    return _last["llm"]


@pytest.fixture(scope="session", autouse=True)
def _release_cached_llm():
    yield
    _last.clear()


@pytest.fixture
def alias_model(monkeypatch):
    """``alias(hub_id, path)``: the scripts' ``LLM(model=hub_id)`` loads ``path`` during this test."""

    def alias(hub_id, path):
        monkeypatch.setitem(_ALIASES, hub_id, str(path))

    return alias


@pytest.fixture
def run_example(monkeypatch, capsys):
    """``run(name)`` -> (what the script's ``main()`` returns, what it printed)."""
    monkeypatch.setattr(jaxllm, "LLM", _llm_factory)

    def run(name):
        namespace = runpy.run_path(os.path.join(HERE, name))
        result = namespace["main"]()
        return result, capsys.readouterr().out

    return run


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """``run(name, *flags)`` runs the script as ``python name flags...`` and returns what it printed."""
    monkeypatch.setattr(jaxllm, "LLM", _llm_factory)

    def run(name, *flags):
        path = os.path.join(HERE, name)
        monkeypatch.setattr(sys, "argv", [path, *map(str, flags)])
        runpy.run_path(path, run_name="__main__")
        return capsys.readouterr().out

    return run
