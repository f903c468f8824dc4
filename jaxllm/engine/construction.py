"""``LLMEngine.from_engine_args`` (vLLM's way to build an engine without ``LLM``).

Building an engine loads the model and compiles its programs, which this jax-free package cannot do itself:
``jaxllm.llm`` registers the builder when it is imported (``import jaxllm`` does), and the engine calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_builder: Callable[[Any], Any] | None = None


def register_engine_builder(builder: Callable[[Any], Any]) -> None:
    """Set the function that turns validated ``EngineArgs`` into a running engine."""
    global _builder
    _builder = builder


class EngineConstruction:
    """The ``from_engine_args`` constructor, mixed into ``LLMEngine``."""

    @classmethod
    def from_engine_args(cls, engine_args: Any) -> Any:
        """The engine ``LLM(**engine_args' fields)`` would drive (an ``LLMEngine``, or the data-parallel engine
        over several): add requests with ``add_request``, run them with ``step()``."""
        if type(engine_args).__name__ != "EngineArgs":
            raise TypeError(f"from_engine_args needs an EngineArgs, got {type(engine_args).__name__}")
        if _builder is None:  # only when jaxllm.engine was imported on its own
            raise RuntimeError("LLMEngine.from_engine_args needs the model runner: import jaxllm first")
        return _builder(engine_args)
