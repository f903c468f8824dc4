"""jaxllm: vLLM's offline LLM class on JAX/XLA.

    from jaxllm import LLM, SamplingParams
"""

from jaxllm.default_model import DEFAULT_MODEL
from jaxllm.inputs import PromptType, TextPrompt, TokensPrompt
from jaxllm.llm import LLM
from jaxllm.load import load_model
from jaxllm.outputs import CompletionOutput, Logprob, RequestOutput
from jaxllm.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams

__version__ = "0.1.0"

__all__ = ["DEFAULT_MODEL", "LLM", "BeamSearchParams", "CompletionOutput", "Logprob", "PromptType", "RequestOutput",
           "RequestOutputKind", "SamplingParams", "TextPrompt", "TokensPrompt", "load_model"]
