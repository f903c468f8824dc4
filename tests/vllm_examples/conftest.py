"""Fixtures of the ported vLLM examples (examples_harness.py has the LLM factory and the shapes)."""

from __future__ import annotations

import os
import runpy
import sys

import pytest
from examples_harness import ALIASES, LAST, llm_factory

import jaxllm

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module", autouse=True)
def _release_cached_llm():
    yield
    LAST.clear()


@pytest.fixture
def alias_model(monkeypatch):
    """``alias(hub_id, path)``: the scripts' ``LLM(model=hub_id)`` loads ``path`` during this test."""

    def alias(hub_id, path):
        monkeypatch.setitem(ALIASES, hub_id, str(path))

    return alias


@pytest.fixture
def run_example(monkeypatch, capsys):
    """``run(name)`` -> (what the script's ``main()`` returns, what it printed)."""
    monkeypatch.setattr(jaxllm, "LLM", llm_factory)

    def run(name):
        namespace = runpy.run_path(os.path.join(HERE, name))
        result = namespace["main"]()
        return result, capsys.readouterr().out

    return run


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """``run(name, *flags)`` runs the script as ``python name flags...`` and returns what it printed."""
    monkeypatch.setattr(jaxllm, "LLM", llm_factory)

    def run(name, *flags):
        path = os.path.join(HERE, name)
        monkeypatch.setattr(sys, "argv", [path, *map(str, flags)])
        runpy.run_path(path, run_name="__main__")
        return capsys.readouterr().out

    return run
