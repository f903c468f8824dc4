"""Which attention kernels the step programs are compiled with: the ``attention_backend`` asked for (or the
dispatcher's default for the model's shapes and the device), the Pallas kernels' tuning, and the long-prefill
split.

Long prefills: when the attention implementation splits prefills by length (``prefill_split``: under
``pallas_mosaic``, the default on Hopper where the model's shapes allow, the Mosaic GPU prefill takes sequences of
>= 2048 new tokens), the buckets that can hold such a prefill get a second forward program with that path, used
only by steps that have one. Under tensor parallelism the default stays the Triton kernels: the Mosaic prefill has
not run inside shard_map on a GPU.
"""

from __future__ import annotations

import logging

import jax

from jaxllm import ops
from jaxllm.config import ModelConfig

logger = logging.getLogger("jaxllm")


class KernelPolicy:
    """The attention choice of one runner. ``impl``: the implementation name (None: the dispatcher decides per
    call); ``prefill_split``: (impl of other steps, impl of steps with a long prefill, the new-token count that
    makes a prefill long) or None; ``asked``: whether the user chose the implementation (``attention_backend``),
    in which case a failing long-prefill compile is an error rather than a fallback."""

    def __init__(self, cfg: ModelConfig, dtype, cache_shape: jax.ShapeDtypeStruct, num_devices: int, *,
                 attention_backend: str | None = None, decode_splits: int | None = None, fp8_dot: str | None = None):
        self.impl = attention_backend
        self.asked = attention_backend is not None
        self._tuning = {"decode_splits": decode_splits, "fp8_dot": fp8_dot or "auto"}
        q = jax.ShapeDtypeStruct((1, cfg.num_heads, cfg.head_dim), dtype)
        windows = cfg.sliding_windows or (None,)
        # layers with a sliding window stay on the Triton prefill inside the long-prefill programs: the split
        # needs one layer without
        window = None if None in windows else windows[0]
        self.prefill_split = None
        if num_devices > 1 and not self.asked and ops.paged_attention.default_impl(q, cache_shape) == "pallas_mosaic":
            self.impl = "pallas_triton"  # explicit, so the model's own default cannot pick Mosaic either
        else:
            self.prefill_split = ops.paged_attention.prefill_split(self.impl, q, cache_shape, window,
                                                                   cfg.attn_logit_softcap, cfg.attention_sinks)

    def attention(self, long_prefill: bool) -> ops.paged_attention.AttentionConfig:
        """The implementation and tuning of a forward program (with or without the long-prefill path)."""
        name = self.impl
        if self.prefill_split is not None:
            name = self.prefill_split[1] if long_prefill else self.prefill_split[0]
        return ops.paged_attention.AttentionConfig(name, **self._tuning)

    def has_long_prefill(self, seqs) -> bool:
        """Whether a step's sequences include a long prefill (it then runs the long-prefill program)."""
        return self.prefill_split is not None and any(s.num_new_tokens >= self.prefill_split[2] for s in seqs)

    def long_prefill_buckets(self, buckets) -> list:
        """The buckets that can hold a long prefill: each gets a second forward program."""
        if self.prefill_split is None:
            return []
        return [b for b in buckets if b.num_tokens >= self.prefill_split[2]]

    def drop_long_prefill(self, error: Exception) -> bool:
        """A long-prefill program failed to compile. When its implementation was the default, not asked for,
        warn and run every step with the other programs' implementation (what Mosaic GPU lowers differs between
        jax versions) and return True; when asked for, return False (the error is the caller's)."""
        if self.asked:
            return False
        if self.prefill_split is not None:
            logger.warning("the %s prefill does not compile here (%s: %s); every step uses %s",
                           self.prefill_split[1], type(error).__name__, (str(error).splitlines() or [""])[0][:200],
                           self.prefill_split[0])
            self.impl = self.prefill_split[0]
            self.prefill_split = None
        return True
