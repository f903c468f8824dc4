"""jaxllm: vLLM's offline LLM class on JAX/XLA.

    from jaxllm import LLM, SamplingParams
"""

from jaxllm.default_model import DEFAULT_MODEL
from jaxllm.in_memory import model_from_params
from jaxllm.inputs import PromptType, TextPrompt, TokensPrompt
from jaxllm.llm import LLM
from jaxllm.load import load_model
from jaxllm.outputs import CompletionOutput, Logprob, RequestOutput
from jaxllm.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams
from jaxllm.structured_outputs import GuidedDecodingParams, StructuredOutputsConfig, StructuredOutputsParams

__version__ = "0.1.0"

__all__ = ["DEFAULT_MODEL", "LLM", "BeamSearchParams", "CompletionOutput", "GuidedDecodingParams", "Logprob",
           "PromptType", "RequestOutput", "RequestOutputKind", "SamplingParams", "StructuredOutputsConfig",
           "StructuredOutputsParams", "TextPrompt", "TokensPrompt", "load_model", "model_from_params"]
