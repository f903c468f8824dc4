"""Structured outputs (JSON schema, regex, choice, grammar): the API objects and the host-side grammar engine
(llguidance). No jax here: the engine imports it; the sampler applies the bitmask on the device."""

from jaxllm.structured_outputs.params import (
    GuidedDecodingParams,
    StructuredOutputsConfig,
    StructuredOutputsParams,
)

__all__ = ["GuidedDecodingParams", "StructuredOutputsConfig", "StructuredOutputsParams"]
