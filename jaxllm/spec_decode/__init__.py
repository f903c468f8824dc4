"""Speculative decoding: the configuration (``SpeculativeConfig``, vLLM's ``speculative_config`` dict) and the
n-gram proposer. Plain Python / numpy: the engine imports this package, and the engine never imports jax. The
on-device acceptance rule is ``jaxllm.spec_decode.rejection`` (jax), used by the runner. docs/spec_decode.md
describes the design."""

from jaxllm.spec_decode.config import SpeculativeConfig
from jaxllm.spec_decode.ngram import NgramProposer

__all__ = ["NgramProposer", "SpeculativeConfig"]
