"""jaxllm: vLLM's offline LLM class on JAX/XLA.

    from jaxllm import LLM, SamplingParams
"""

from jaxllm.default_model import DEFAULT_MODEL
from jaxllm.engine import LLMEngine
from jaxllm.engine_args import EngineArgs
from jaxllm.in_memory import model_from_params
from jaxllm.inputs import EmbedsPrompt, PromptType, TextPrompt, TokensPrompt
from jaxllm.llm import LLM
from jaxllm.load import load_model
from jaxllm.outputs import (
    ClassificationOutput,
    ClassificationRequestOutput,
    CompletionOutput,
    EmbeddingOutput,
    EmbeddingRequestOutput,
    Logprob,
    PoolingOutput,
    PoolingRequestOutput,
    RequestOutput,
    ScoringOutput,
    ScoringRequestOutput,
)
from jaxllm.pooling.config import PoolerConfig
from jaxllm.pooling_params import PoolingParams
from jaxllm.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams
from jaxllm.structured_outputs import GuidedDecodingParams, StructuredOutputsConfig, StructuredOutputsParams

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "BeamSearchParams",
    "ClassificationOutput",
    "ClassificationRequestOutput",
    "CompletionOutput",
    "EmbeddingOutput",
    "EmbeddingRequestOutput",
    "EmbedsPrompt",
    "EngineArgs",
    "GuidedDecodingParams",
    "LLMEngine",
    "Logprob",
    "PoolerConfig",
    "PoolingOutput",
    "PoolingParams",
    "PoolingRequestOutput",
    "PromptType",
    "RequestOutput",
    "RequestOutputKind",
    "SamplingParams",
    "ScoringOutput",
    "ScoringRequestOutput",
    "StructuredOutputsConfig",
    "StructuredOutputsParams",
    "TextPrompt",
    "TokensPrompt",
    "load_model",
    "model_from_params",
]
