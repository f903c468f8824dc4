"""Decoder-only transformers (Llama 2/3/3.x, Mistral, Qwen2, Qwen3, Gemma 1/2/3, Phi-3/3.5/4, OLMo 2, Granite,
SmolLM3, Starcoder2, Cohere, GPT-2, GPT-NeoX, Phi, StableLM, OPT; MoE: Mixtral, Qwen3-MoE, Qwen2-MoE, OLMoE,
GraniteMoe(Shared), PhiMoE, DBRX, Ernie 4.5 MoE, gpt-oss) as one config-driven Flax NNX module.

Differences between the families are config flags: q/k/v biases (Qwen2), q/k RMSNorm per head (Qwen3, Gemma 3)
or over the whole projection (OLMo 2, OLMoE), per-head q/k LayerNorm (Cohere), q/k/v clamping (OLMoE), explicit
head_dim, sliding windows per layer (Mistral, Gemma 2/3, Phi-3, Starcoder2), rope scaling (Llama 3.x, Gemma 3
global layers, Phi-3 longrope), a second rope for local layers (Gemma 3), layers without rope (SmolLM3),
interleaved rope (Cohere), partial rotary (Phi-4-mini), norm placement ("pre"; Gemma 2/3 "sandwich"; OLMo 2
"post"; Cohere, Phi "parallel": attention and MLP from one norm; GPT-NeoX "parallel_two": each from its own
norm; OPT "post_residual": norms after the residual adds), LayerNorm instead of RMSNorm (Starcoder2, Cohere, the
classic families), learned absolute positions (GPT-2, OPT), OPT's projected embeddings, an lm_head bias (Phi),
Gemma's (1 + w) norms, sqrt(D) embedding scale, Granite's embedding / residual / attention / logits multipliers,
GeGLU, the plain c_fc / c_proj MLP (Starcoder2; jaxllm.models.plain_mlp), attention / final logit soft-capping,
logit scaling, tied embeddings, and mixture-of-experts MLPs in the layers ``cfg.moe_layers`` marks
(jaxllm.models.moe; with Qwen2-MoE's shared expert: jaxllm.models.shared_moe; gpt-oss's biased experts:
jaxllm.models.gpt_oss_moe), attention sinks (gpt-oss).

Two entry points share every layer:
- ``model(input_ids[B, T]) -> logits[B, T, V]``: dense causal forward, no cache (scoring, probing).
- ``model.forward_paged(input_ids[T], positions[T], kv_caches, metadata) -> (hidden[T, D], kv_caches)``:
  the engine's flattened ragged batch over the paged KV cache; ``model.compute_logits`` then projects
  only the rows that need logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.config_families import LAYER_NORMS
from jaxllm.models.attention import Attention, AttentionMetadata, DenseCausalAttention, PagedAttention
from jaxllm.models.layers import GatedMLP, norm, param, rope_cos_sin
from jaxllm.models.lora import LayerLoRA
from jaxllm.models.moe import SparseMoeBlock
from jaxllm.models.plain_mlp import LearnedPositions, PlainMLP
from jaxllm.models.shared_moe import moe_block


def _identity(x):
    return x


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, dtype, rngs: nnx.Rngs):
        self.placement = cfg.norm_placement
        for name in LAYER_NORMS[cfg.norm_placement]:
            setattr(self, name, norm(cfg, cfg.hidden_size, dtype))
        self.self_attn = Attention(cfg, layer_idx, dtype, rngs)
        if cfg.is_moe_layer(layer_idx):
            self.mlp = moe_block(cfg, dtype, rngs)
        else:
            self.mlp = PlainMLP(cfg, dtype, rngs) if cfg.mlp_type == "plain" else GatedMLP(cfg, dtype, rngs)
        self.residual_multiplier = cfg.residual_multiplier  # Granite scales each block's output

    def _norms(self):
        """(before attention, after attention, before the MLP, after the MLP): norms or the identity."""
        get = lambda name: getattr(self, name, None) or _identity
        if self.placement == "pre":
            return self.input_layernorm, _identity, self.post_attention_layernorm, _identity
        return (get("input_layernorm"), self.post_attention_layernorm, get("pre_feedforward_layernorm"),
                self.post_feedforward_layernorm)

    def __call__(self, x, cos, sin, attend, kv_cache, lora: LayerLoRA | None = None):
        if self.placement in ("parallel", "parallel_two"):  # attention and MLP both read x (Cohere: one norm)
            normed = self.input_layernorm(x)
            mlp_in = normed if self.placement == "parallel" else self.post_attention_layernorm(x)
            with jax.named_scope("attention"):
                h, kv_cache = self.self_attn(normed, cos, sin, attend, kv_cache, lora=lora)
            return x + self._scaled(h) + self._scaled(self.mlp(mlp_in, lora=lora)), kv_cache
        if self.placement == "post_residual":  # OPT's post-norm: the norms follow each residual add
            with jax.named_scope("attention"):
                h, kv_cache = self.self_attn(x, cos, sin, attend, kv_cache, lora=lora)
            x = self.input_layernorm(x + h)
            return self.post_attention_layernorm(x + self.mlp(x, lora=lora)), kv_cache
        attn_in, attn_out, mlp_in, mlp_out = self._norms()
        with jax.named_scope("attention"):
            h, kv_cache = self.self_attn(attn_in(x), cos, sin, attend, kv_cache, lora=lora)
            x = x + self._scaled(attn_out(h))
        mlp = self.mlp(mlp_in(x)) if isinstance(self.mlp, SparseMoeBlock) else self.mlp(mlp_in(x), lora=lora)
        x = x + self._scaled(mlp_out(mlp))
        return x, kv_cache

    def _scaled(self, h):
        """A block's output times ``residual_multiplier`` (Granite; in h's dtype, as transformers)."""
        return h if self.residual_multiplier == 1.0 else h * self.residual_multiplier


@functools.partial(jax.jit, static_argnums=(0,))
def _apply_layer(graphdef, state, x, cos, sin, attend, kv_cache, lora=None):
    """One decoder layer as its own jitted function: layers of the same structure share one trace (per shape),
    so tracing a bucket costs one layer instead of all of them (XLA inlines the calls; the compiled program is
    the same). ``attend`` is a pytree (its metadata arrays are traced, its impl/mesh static); ``lora`` this
    layer's adapters (LayerLoRA) or None."""
    return nnx.merge(graphdef, state)(x, cos, sin, attend, kv_cache, lora)


class LlamaForCausalLM(nnx.Module):
    """Decoder-only transformer with SwiGLU MLPs, RMSNorm and rotary embeddings."""

    supports_lora = True  # forward_paged takes per-layer LoRA adapters (jaxllm/models/lora.py)
    supports_prompt_embeds = True  # forward_paged takes rows that replace token embeddings
    layer_class = DecoderLayer  # (a family with its own attention / MLP modules subclasses it: DeepSeek)

    def __init__(self, cfg: ModelConfig, *, dtype=None, rngs: nnx.Rngs | None = None):
        dtype = jnp.dtype(dtype or cfg.dtype)
        rngs = rngs or nnx.Rngs(0)
        self.config = cfg
        self.dtype = dtype
        self.supports_lora = cfg.mlp_type == "gated"  # (LoRA targets the gated MLP's projections)
        e = cfg.embed_proj_dim or cfg.hidden_size  # (OPT's projected embeddings: E != D)
        self.supports_prompt_embeds = not cfg.embed_proj_dim
        self.embed = param((cfg.vocab_size, e), dtype, ("vocab", "embed"), rngs=rngs)
        self.positions = LearnedPositions(cfg, dtype, rngs) if cfg.position_embedding == "learned" else None
        self.project_in = param((e, cfg.hidden_size), dtype, (None, "embed"), rngs=rngs) if cfg.embed_proj_dim else None
        self.project_out = param((cfg.hidden_size, e), dtype, ("embed", None), rngs=rngs) if cfg.embed_proj_dim else None
        self.layers = nnx.List([self.layer_class(cfg, i, dtype, rngs) for i in range(cfg.num_layers)])
        self.norm = norm(cfg, cfg.hidden_size, dtype) if cfg.final_norm else None
        if cfg.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = param((cfg.vocab_size, e), dtype, ("vocab", "embed"), rngs=rngs)
        self.lm_head_bias = param((cfg.vocab_size,), dtype, ("vocab",), init="zeros") if cfg.lm_head_bias else None

    def _backbone(self, input_ids, positions, attend, kv_caches, lora=None, prompt_embeds=None):
        cfg = self.config
        x = jnp.take(self.embed[...], input_ids, axis=0)
        if prompt_embeds is not None:  # (is_embed [T], rows [T, D]): the caller's rows replace the lookup's
            is_embed, rows = prompt_embeds
            x = jnp.where(is_embed[:, None], rows.astype(x.dtype), x)
        if self.project_in is not None:
            x = x @ self.project_in[...]
        if self.positions is not None:
            x = x + self.positions(positions)
        if cfg.embed_scale:  # the scale in the activation dtype, as HF (bf16 rounds sqrt(D))
            x = x * jnp.asarray(cfg.hidden_size ** 0.5, x.dtype)
        if cfg.embedding_multiplier != 1.0:  # Granite
            x = x * cfg.embedding_multiplier
        # a length-dependent rope follows each sequence's length
        seq_lens = attend.rope_seq_lens(positions) if cfg.rope.length_dependent else None
        rotary_dim = cfg.rotary_dim or cfg.head_dim
        ropes = {}  # one cos/sin pair per distinct rope (Gemma 3: local and global)
        new_caches = []
        for i, layer in enumerate(self.layers):
            rope = cfg.layer_rope(i)
            if rope not in ropes:
                ropes[rope] = rope_cos_sin(positions, rope, rotary_dim, seq_lens)
            cos, sin = ropes[rope]
            graphdef, state = nnx.split(layer)
            with jax.named_scope(f"layer_{i}"):
                x, cache = _apply_layer(graphdef, state, x, cos, sin, attend,
                                        None if kv_caches is None else kv_caches[i],
                                        None if lora is None else lora[i])
            new_caches.append(cache)
        x = x if self.norm is None else self.norm(x)
        return x if self.project_out is None else x @ self.project_out[...], new_caches

    def compute_logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> float32 logits [..., V] (soft-capped: cap * tanh(logits / cap), Gemma 2; divided by
        ``logits_scaling``, Granite)."""
        head = self.embed[...] if self.lm_head is None else self.lm_head[...]
        cap = self.config.final_logit_softcap
        with jax.named_scope("lm_head"):
            logits = jnp.einsum("...d,vd->...v", hidden, head, preferred_element_type=jnp.float32)
            if self.lm_head_bias is not None:  # (Phi)
                logits = logits + self.lm_head_bias[...].astype(jnp.float32)
            if self.config.logits_scaling != 1.0:
                logits = logits / self.config.logits_scaling
            if self.config.logit_scale != 1.0:  # Cohere
                logits = logits * self.config.logit_scale
            return logits if cap is None else cap * jnp.tanh(logits / cap)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        """Dense causal forward: int32 ids [B, T] -> float32 logits [B, T, V]."""
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape [batch, seq_len], got {input_ids.shape}")
        if self.positions is not None:
            self.positions.check_length(input_ids.shape[1])
        positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
        hidden, _ = self._backbone(input_ids, positions, DenseCausalAttention(), None)
        return self.compute_logits(hidden)

    def forward_paged(self, input_ids: jax.Array, positions: jax.Array, kv_caches: list[jax.Array],
                      metadata: AttentionMetadata, attention_impl: str | None = None, mesh=None,
                      lora: list[LayerLoRA] | None = None, prompt_embeds=None):
        """Engine path: ids/positions [T] -> (hidden [T, D], updated kv_caches). ``mesh``: run attention per
        tensor-parallel shard (see PagedAttention). ``lora``: one LayerLoRA per layer (multi-LoRA), or None.
        ``prompt_embeds``: (is_embed [T] bool, rows [T, D]) or None: flagged tokens take their row in place of
        their id's embedding (before Gemma's sqrt(D) scale, which applies to both, as in HF)."""
        return self._backbone(input_ids, positions, PagedAttention(metadata, attention_impl, mesh), kv_caches,
                              lora, prompt_embeds)
