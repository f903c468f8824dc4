"""jaxllm: vLLM's offline LLM class on JAX/XLA."""

from jaxllm.load import load_model

__version__ = "0.1.0"

__all__ = ["load_model"]
