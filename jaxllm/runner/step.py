"""The jitted step, as two programs that run back to back on device without a host sync:

- ``forward``: the model over the flattened ragged batch with the paged KV cache (donated), returning the
  float32 logits of each sequence's last new token only ([S, V]);
- ``sample``: the sampler on those logits.

Asynchronous scheduling: the engine may schedule step N+1 before step N's sampled ids reach the host. A decode
token that is not known yet is passed as ``-(row + 1)``, where ``row`` is its sequence's row in step N, and the
forward reads it from ``prev_tokens`` (step N's sampled ids, still on device). So the host never waits for a
sampled id before launching the next step.

Splitting them means the (large) forward program is compiled once per token bucket, while the (small) sampler
programs are compiled per sequence bucket and sampler variant, instead of the product of the two.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.models.lora import layer_loras
from jaxllm.models.sampler import sample
from jaxllm.models.sampler_logprobs import prompt_token_logprobs
from jaxllm.runner.input_batch import unpack_step_inputs
from jaxllm.runner.sampler_config import GREEDY_CONFIG
from jaxllm.runner.sampling_metadata import unpack_sampling_metadata
from jaxllm.spec_decode.rejection import accepted_rows, sample_and_verify


def _forward(graphdef, treedef, mesh, with_lora, with_embeds, params, kv_caches, packed_inputs, prev_tokens,
             lora_stacks, prompt_embeds=(), *,
             dims: tuple[int, ...], return_hidden: bool, attention_impl, logits_sharding=None,
             vocab_logits_sharding=None):
    """-> (kv_caches, logits [L, V] float32, hidden [T, D] or None, greedy); ``dims`` = (T, S, P) or, with
    speculative decoding, (T, S, P, L) where L is the number of sampling rows (else L = S). ``logits_sharding``
    (replicated under tensor parallelism) is the layout the sampler program is compiled for. ``params`` is the
    flat list of parameter arrays (``treedef`` rebuilds the NNX state): a flat list keeps per-call dispatch cheap.
    ``prev_tokens`` [max_num_seqs] int32: the previous step's sampled ids, read by negative input ids.
    ``attention_impl``: an ``ops.paged_attention.AttentionConfig`` (or a name; None: the dispatcher's default).
    ``with_lora``: the packed inputs end with each token's adapter slot [T] and ``lora_stacks`` is the flat list
    of adapter slot stacks (jaxllm/runner/lora_slots.py); else ``lora_stacks`` is empty.
    ``with_embeds`` (``enable_prompt_embeds``): ``prompt_embeds`` is (is_embed [T] bool, rows [T, D]), the
    tokens that take a row of the caller's embeddings instead of their id's (jaxllm/runner/prompt_embeds.py);
    else it is empty.
    ``greedy``: the greedy sampler program's output (``GREEDY_CONFIG``; token ids padded like ``prev_tokens``)
    computed in this program: a step whose rows are all greedy takes it and launches no sampler program, one
    program launch per device fewer per step (tensor parallelism launches each program on every device from the
    host)."""
    options = {}  # only models with supports_lora / supports_prompt_embeds take these keywords
    if with_lora:
        packed_inputs, token_slots = packed_inputs[:-dims[0]], packed_inputs[-dims[0]:]
        options["lora"] = layer_loras(lora_stacks, token_slots)
    if with_embeds:
        options["prompt_embeds"] = prompt_embeds
    inputs = unpack_step_inputs(packed_inputs, *dims)  # dims = (T, S, P[, L]), static
    ids = inputs.input_ids
    rows = jnp.clip(-ids - 1, 0, prev_tokens.shape[0] - 1)
    inputs.input_ids = jnp.where(ids < 0, prev_tokens[rows], ids)
    model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, params))
    hidden, kv_caches = model.forward_paged(inputs.input_ids, inputs.positions, kv_caches, inputs.attention,
                                            attention_impl, mesh, **options)
    with jax.named_scope("logits"):
        logits = model.compute_logits(hidden[inputs.logits_indices])
        if vocab_logits_sharding is not None:  # each device multiplies by its vocab shard of the head, then the
            # [L, V] logits are gathered; without this GSPMD may all-gather the whole [V, D] head every step
            logits = jax.lax.with_sharding_constraint(logits, vocab_logits_sharding)
        if logits_sharding is not None:
            logits = jax.lax.with_sharding_constraint(logits, logits_sharding)
    greedy = _sample_packed(logits, jnp.zeros(0, jnp.int32), config=GREEDY_CONFIG, out_rows=prev_tokens.shape[0])
    return kv_caches, logits, (hidden if return_hidden else None), greedy


def make_forward(graphdef, treedef, mesh, with_lora: bool = False, with_embeds: bool = False):
    """jit of the forward for one model graph on ``mesh``; the KV cache (argument 1) is donated."""
    return jax.jit(functools.partial(_forward, graphdef, treedef, mesh, with_lora, with_embeds),
                   static_argnames=("dims", "return_hidden", "attention_impl", "logits_sharding",
                                    "vocab_logits_sharding"),
                   donate_argnums=(1,))


def _sample_packed(logits, packed_metadata, packed_spec=None, draft_probs=None, *, config, out_rows: int):
    """The sampler on a packed metadata buffer; token ids padded (or cut) to ``out_rows`` (the largest sequence
    bucket) so the next step's forward takes them as ``prev_tokens`` whatever this step's bucket was.

    Speculative decoding: ``packed_spec`` [2, L] i32 holds each row's draft token to verify and its sequence's
    first row (``accepted_rows``); the program then returns (SamplerOutput with the token id of every row [L],
    valid [L] bool, prev_tokens [out_rows]). Sampled drafts (``draft_probs``: the draft steps' distributions,
    k arrays [D, V]) add a third row to ``packed_spec``, each row's index into them, and are verified by the
    rejection rule written out (``sample_and_verify``)."""
    md = unpack_sampling_metadata(packed_metadata, config, logits.shape[0])
    if draft_probs is None:
        out = sample(logits, md, config)
    else:
        out = sample_and_verify(logits, md, config, packed_spec[0], packed_spec[2], draft_probs)
    tokens = out.token_ids
    prev = jnp.pad(tokens, (0, max(0, out_rows - logits.shape[0])))[:out_rows]
    if packed_spec is None:
        out.token_ids = prev
        return out
    return out, accepted_rows(tokens, packed_spec[0], packed_spec[1]), prev


def make_sample():
    return jax.jit(_sample_packed, static_argnames=("config", "out_rows"))


def _prompt_logprobs(graphdef, treedef, params, hidden, targets, *, k: int, logprobs_mode: str):
    """hidden [N, D], targets [N] -> value/rank of each target and the top-k, from the raw logits
    (``prompt_token_logprobs``: log_softmax or the logits themselves, by ``logprobs_mode``)."""
    model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, params))
    return prompt_token_logprobs(model.compute_logits(hidden), targets, k, logprobs_mode)


def make_prompt_logprobs(graphdef, treedef, logprobs_mode: str = "raw_logprobs"):
    return jax.jit(functools.partial(_prompt_logprobs, graphdef, treedef, logprobs_mode=logprobs_mode),
                   static_argnames=("k",))
