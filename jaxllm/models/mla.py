"""Multi-head latent attention (DeepSeek-V2 / V3) over the shared attend step (dense or paged).

Shape letters: T tokens (any leading dims), D model dim, H heads, Rq q_lora_rank, Rkv kv_lora_rank, Dn
qk_nope_head_dim, Dr qk_rope_head_dim (``cfg.rotary_dim``), Dv v_head_dim, Dh = max(Dn + Dr, Dv) the cache's head
dim (``cfg.head_dim``).

q = q_b(norm(q_a(x))) (or q_proj(x)) -> [T, H, Dn + Dr]; the latent c = kv_a(x) [T, Rkv + Dr] splits into
norm(c[:Rkv]) -> kv_b -> per-head k_nope [T, H, Dn] and v [T, H, Dv], and one rope key k_pe [T, Dr] shared by every
head. Only the Dr parts of q and k rotate (adjacent pairs: V2's complex rotation, V3's ``rope_interleave``; both
give the same q.k as transformers, whose V3 form stores the rotated pairs de-interleaved in q and k alike).

Cache layouts (``cfg.mla_latent_cache``; the attention backend picks one: config_deepseek.mla_cache_fields):
- per-head K = [k_nope, k_pe] and V (zero-padded from Dv to Dh) in the ordinary paged cache [2, NB, BS, H, Dh],
  so every attention implementation runs MLA unchanged (the GPU kernels take Dh = 192 of the real models: a
  multiple of 8 in [16, 256], tiled as 256; the padded output columns are dropped before o_proj);
- the compressed latent [c_kv, k_pe] as one kv head of Rkv + Dr (576) values, kv_b's key half absorbed into q and
  its value half applied after the attend step (vLLM's MLA cache): 2 * 576 values per token and layer instead of
  2 * H * Dh, on the jnp attention implementations (docs/deepseek.md).

Tensor parallelism: q_b / q_proj, kv_b and o_proj split by heads (the paged kernel then runs per shard on H/N
heads, each device caching only its heads' K / V, or a replica of the one latent head); q_a, kv_a and their
norms are small ([D, Rq], [D, Rkv + Dr]) and replicated, so each device computes the whole latent from its
replicated x with no extra collective (o_proj's row-parallel sum is the layer's only one, as for the other
families).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.config_deepseek import mla_softmax_scale
from jaxllm.models.layers import RMSNorm, apply_rope, linear_weight, param
from jaxllm.models.quant import linear


class MLAttention(nnx.Module):
    """DeepSeek's latent attention: x [..., T, D] -> ([..., T, D], kv_cache); see the module docstring."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, dtype, rngs: nnx.Rngs):
        d, h = cfg.hidden_size, cfg.num_heads
        self.nope, self.rope_dim, self.v_dim, self.head_dim = (cfg.qk_nope_head_dim, cfg.rotary_dim,
                                                               cfg.v_head_dim, cfg.head_dim)
        self.kv_rank = cfg.kv_lora_rank
        qk = self.nope + self.rope_dim
        eps = cfg.rms_norm_eps  # (vLLM's; transformers' latent norms keep their 1e-6 default: equal in the configs)
        if cfg.q_lora_rank:
            self.q_a_proj = linear_weight((d, cfg.q_lora_rank), dtype, ("embed", None), 1, cfg, rngs)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, eps, dtype)
            self.q_b_proj = linear_weight((cfg.q_lora_rank, h, qk), dtype, (None, "q_heads", "head_dim"), 1, cfg,
                                          rngs)
            self.q_proj = None
        else:
            self.q_a_proj = self.q_a_layernorm = self.q_b_proj = None
            self.q_proj = linear_weight((d, h, qk), dtype, ("embed", "q_heads", "head_dim"), 1, cfg, rngs)
        self.kv_a_proj_with_mqa = linear_weight((d, self.kv_rank + self.rope_dim), dtype, ("embed", None), 1, cfg,
                                                rngs)
        self.kv_a_layernorm = RMSNorm(self.kv_rank, eps, dtype)
        # kv_b stays in the model dtype under quantization: the latent path absorbs its halves into q and the
        # output (vLLM likewise keeps the absorbed W_UK / W_UV unquantized)
        self.kv_b_proj = param((self.kv_rank, h, self.nope + self.v_dim), dtype, (None, "q_heads", "head_dim"),
                               rngs=rngs)
        self.o_proj = linear_weight((h, self.v_dim, d), dtype, ("q_heads", "head_dim", "embed"), 2, cfg, rngs)
        self.kv_scale = param((2,), jnp.float32, (None,), init="ones")  # (an fp8 cache's k/v scales)
        self.sm_scale = mla_softmax_scale(cfg)
        self.rope_interleaved = cfg.rope_interleaved
        self.latent_cache = cfg.mla_latent_cache

    def _query(self, x):
        """x [..., T, D] -> q [..., T, H, Dn + Dr]."""
        if self.q_proj is not None:
            return linear(x, self.q_proj, "...d,dhk->...hk")
        q_latent = self.q_a_layernorm(linear(x, self.q_a_proj, "...d,dr->...r"))
        return linear(q_latent, self.q_b_proj, "...r,rhk->...hk")

    def _pad(self, t):
        """[..., H, w] -> [..., H, Dh], zeros on the right (w < Dh: V, or q/k when Dv is the wider)."""
        width = t.shape[-1]
        if width == self.head_dim:
            return t
        return jnp.pad(t, [(0, 0)] * (t.ndim - 1) + [(0, self.head_dim - width)])

    def __call__(self, x, cos, sin, attend, kv_cache, lora=None):
        """x [..., T, D]; cos/sin [..., T, Dr / 2]. ``lora`` must be None (the model reports supports_lora =
        False)."""
        if lora is not None:
            raise ValueError("LoRA adapters are not supported for multi-head latent attention")
        with jax.named_scope("qkv"):
            q = self._query(x)
            latent = linear(x, self.kv_a_proj_with_mqa, "...d,dc->...c")
            c_kv = self.kv_a_layernorm(latent[..., :self.kv_rank])  # [..., T, Rkv]
            q_pe = apply_rope(q[..., self.nope:], cos, sin, self.rope_interleaved)
            k_pe = apply_rope(latent[..., None, self.kv_rank:], cos, sin, self.rope_interleaved)  # [..., T, 1, Dr]
        if self.latent_cache:
            return self._attend_latent(q[..., :self.nope], q_pe, c_kv, k_pe, attend, kv_cache)
        with jax.named_scope("qkv"):
            kv = jnp.einsum("...r,rhk->...hk", c_kv, self.kv_b_proj[...])  # [..., T, H, Dn + Dv]
            k_nope, v = kv[..., :self.nope], kv[..., self.nope:]
            q = jnp.concatenate([q[..., :self.nope], q_pe], axis=-1)
            k = jnp.concatenate([k_nope, jnp.broadcast_to(k_pe, (*k_nope.shape[:-1], self.rope_dim))], axis=-1)
        with jax.named_scope("attend"):
            out, kv_cache = attend(self._pad(q), self._pad(k), self._pad(v), kv_cache, sm_scale=self.sm_scale,
                                   sliding_window=None, kv_scale=self.kv_scale[...], soft_cap=None)
        with jax.named_scope("o_proj"):
            return linear(out[..., :self.v_dim], self.o_proj, "...hk,hkd->...d"), kv_cache

    def _attend_latent(self, q_nope, q_pe, c_kv, k_pe, attend, kv_cache):
        """The latent cache: kv_b's key half absorbed into q (q_nope [..., T, H, Dn] -> [..., T, H, Rkv]), MQA of
        [q_latent, q_pe] against the one cached head [c_kv, k_pe] (Rkv + Dr wide; V = [c_kv, 0]), then kv_b's
        value half applied to the attention output over c_kv: the same scores and outputs as the expanded form."""
        w_uk, w_uv = self.kv_b_proj[...][..., :self.nope], self.kv_b_proj[...][..., self.nope:]
        with jax.named_scope("absorb_q"):
            q = jnp.concatenate([jnp.einsum("...hn,rhn->...hr", q_nope, w_uk), q_pe], axis=-1)
            c_kv = c_kv[..., None, :]  # [..., T, 1, Rkv]
            k = jnp.concatenate([c_kv, k_pe], axis=-1)
            v = jnp.concatenate([c_kv, jnp.zeros_like(k_pe)], axis=-1)
        with jax.named_scope("attend"):
            out, kv_cache = attend(q, k, v, kv_cache, sm_scale=self.sm_scale, sliding_window=None,
                                   kv_scale=self.kv_scale[...], soft_cap=None)  # [..., T, H, Rkv + Dr]
        with jax.named_scope("o_proj"):
            heads = jnp.einsum("...hr,rhv->...hv", out[..., :self.kv_rank], w_uv)
            return linear(heads, self.o_proj, "...hv,hvd->...d"), kv_cache
