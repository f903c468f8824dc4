"""How a ModelRunner's programs are lowered: each program key traced against shapes only (the parameters',
the KV cache plan's, a bucket's all-padding step inputs, neutral sampling metadata), so programs compile before
the cache is allocated, while a background compile runs beside steps, and for another platform than the
devices' (a CPU test inspects what a GPU would run). Mixed into ``ModelRunner``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.runner.buckets import Bucket
from jaxllm.runner.input_batch import dummy_step_inputs, pack_step_inputs, warm_up_step_inputs
from jaxllm.runner.programs import ForwardKey, ProgramKey
from jaxllm.runner.sampling_metadata import dummy_sampling_metadata, pack_sampling_metadata


class ProgramLowering:
    """Needs the runner's ``param_shapes``, ``cache_plan``, ``_forward``, ``_sample``, ``_prev_tokens``,
    ``kernels``, ``spec``, ``lora``, ``prompt_embeds``, ``draft``, ``cfg``, ``max_blocks_per_seq``, ``_max_seqs``,
    ``forward_compile_options`` and its shardings."""

    def _compile(self, key: ProgramKey):
        """Lower and compile one program against the cache's current shapes."""
        options = self.forward_compile_options if isinstance(key, ForwardKey) else None
        return self.lower(key).compile(compiler_options=options)

    def lower(self, key: ProgramKey, lowering_platforms: tuple[str, ...] | None = None):
        """The lowered (not compiled) program of ``key``, against the parameters' and the cache plan's shapes (a
        background compile runs while steps replace the arrays, or while sleep mode drops them);
        ``lowering_platforms`` (e.g. ``("cuda",)``) lowers for another platform than the devices' (a CPU test
        inspects what a GPU would run)."""
        if isinstance(key, ForwardKey):
            return self._forward.trace(self.param_shapes, self.cache_plan.shapes(), self._padding_step(key.bucket),
                                       shapes_of(self._prev_tokens),
                                       self._lora_stacks(), self._prompt_embeds_arg(key.bucket, shapes=True),
                                       dims=self._dims(key.bucket), return_hidden=self._returns_hidden(key),
                                       attention_impl=self.kernels.attention(key.long_prefill),
                                       logits_sharding=self._replicated, vocab_logits_sharding=self._vocab_logits
                                       ).lower(lowering_platforms=lowering_platforms)
        logits = jax.ShapeDtypeStruct((key.num_seqs, self.cfg.vocab_size), jnp.float32, sharding=self._replicated)
        return self._sample.trace(logits, self._neutral_sampling(key.num_seqs, key.config),
                                  *self._neutral_spec(key.num_seqs, key.sampled_drafts), config=key.config,
                                  out_rows=self._max_seqs).lower(lowering_platforms=lowering_platforms)

    def _returns_hidden(self, key: ForwardKey) -> bool:
        """Prompt logprobs read the hidden states; an EAGLE head reads them at every step."""
        return key.return_hidden or getattr(getattr(self, "draft", None), "records_hidden", False)

    def _padding_step(self, bucket: Bucket, warm_up: bool = False):
        """A bucket's all-padding step inputs (no sequence, nothing written), packed and on the device: what its
        forward programs are compiled against; ``warm_up``: with one token reading cache slot 0 (nothing
        written either, ``warm_up_step_inputs``), what they first run on."""
        rows = self.spec.num_rows(bucket) if self.spec.enabled else None
        inputs = (warm_up_step_inputs if warm_up else dummy_step_inputs)(bucket, self.max_blocks_per_seq, rows)
        packed = pack_step_inputs(inputs)
        if self.lora is not None:  # each token's adapter slot: 0, no adapter
            packed = np.concatenate([packed, np.zeros(bucket.num_tokens, np.int32)])
        return jax.device_put(packed, self._replicated)

    def _lora_stacks(self) -> list:
        """The forward's adapter slot stacks argument (empty without LoRA)."""
        return [] if self.lora is None else self.lora.leaves

    def _prompt_embeds_arg(self, bucket: Bucket, shapes: bool = False) -> tuple:
        """The forward's prompt-embeddings argument for a step without embeddings (empty when the option is
        off); ``shapes``: as ShapeDtypeStructs (compiling)."""
        if self.prompt_embeds is None:
            return ()
        return self.prompt_embeds.shapes(bucket) if shapes else self.prompt_embeds.empty(bucket)

    def _neutral_sampling(self, num_seqs: int, config):
        """Neutral sampling metadata of ``config``'s shapes, packed and on the device (compile and first run)."""
        md = dummy_sampling_metadata(config, num_seqs, self.cfg.vocab_size)
        return jax.device_put(pack_sampling_metadata(md, config, num_seqs), self._replicated)

    def _neutral_spec(self, num_rows: int, sampled_drafts: bool = False) -> tuple:
        """The sampler's draft-verification arguments for a step without drafts, on the device (() without
        speculative decoding; with ``sampled_drafts``, the draft's distributions too: zeros)."""
        probs = self.draft.neutral_probs() if sampled_drafts else None
        args = tuple(jax.device_put(a, self._replicated) for a in self.spec.verify_args([], num_rows, probs))
        return args + (probs.arrays,) if probs is not None else args

    def _dims(self, bucket: Bucket) -> tuple[int, ...]:
        return self.spec.dims(bucket, self.max_blocks_per_seq)


def shapes_of(tree):
    """ShapeDtypeStructs (with shardings) of a pytree of arrays: what a program is compiled against."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)
