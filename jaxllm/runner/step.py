"""The ONE jitted step: forward over the flattened ragged batch with the paged KV cache (donated), logits
for each sequence's last token only, and sampling on device."""

from __future__ import annotations

import functools

import jax
from flax import nnx

from jaxllm.models.sampler import sample, token_logprobs
from jaxllm.runner.input_batch import StepInputs


def _model_step(graphdef, state, kv_caches, inputs: StepInputs, sampling_md, *, sampler_config,
                return_hidden: bool, attention_impl: str | None):
    """-> (kv_caches, SamplerOutput, hidden [T, D] or None)."""
    model = nnx.merge(graphdef, state)
    hidden, kv_caches = model.forward_paged(inputs.input_ids, inputs.positions, kv_caches, inputs.attention,
                                            attention_impl)
    with jax.named_scope("logits"):
        logits = model.compute_logits(hidden[inputs.logits_indices])  # [S, V] float32
    with jax.named_scope("sampler"):
        out = sample(logits, sampling_md, sampler_config)
    return kv_caches, out, (hidden if return_hidden else None)


def make_step(graphdef):
    """jit of the step for one model graph; static args pick the compiled variant, the cache is donated."""
    return jax.jit(functools.partial(_model_step, graphdef),
                   static_argnames=("sampler_config", "return_hidden", "attention_impl"),
                   donate_argnums=(1,))


def _prompt_logprobs(graphdef, state, hidden, targets, *, k: int):
    """hidden [N, D], targets [N] -> logprob/rank of each target and the top-k, from raw logits."""
    model = nnx.merge(graphdef, state)
    return token_logprobs(model.compute_logits(hidden), targets, k)


def make_prompt_logprobs(graphdef):
    return jax.jit(functools.partial(_prompt_logprobs, graphdef), static_argnames=("k",))
