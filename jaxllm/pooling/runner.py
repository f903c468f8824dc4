"""PoolingModelRunner: the paged engine's runner for decoder pooling models (prefill-only requests).

It keeps the generate runner's whole host<->device boundary (bucket ladder, KV-cache sizing and allocation,
ahead-of-time compilation, the long-prefill attention split) and swaps the step program: the model's forward
over the ragged batch, then per sequence one [D] float32 row chosen by the pooling type (``_pool_rows``)
instead of logits and sampling. A long prompt is chunked by the scheduler like any prefill; the host combines
its chunks (``pooler.PooledState``) and, on the last one, applies the task head (``pooler.finish``). Token-level
tasks also fetch every new token's hidden state, from a second program per bucket compiled on first use.

With asynchronous scheduling the engine packs and launches step N+1 while step N runs (``dispatch`` /
``fetch``): a sequence whose prompt ends in step N is never scheduled again, and one whose next chunk is in
step N+1 has its chunks fetched in order. A prompt preempted by swap (``swap_space``, the KV cache's host tier)
resumes at its next chunk with its pooled state kept; one preempted by recompute starts again from its first.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.engine.batch import RunnerOutput, ScheduledBatch
from jaxllm.pooling.config import PoolingModelInfo
from jaxllm.pooling.outputs import pooled_output
from jaxllm.pooling.pooler import PooledState, finish
from jaxllm.runner.input_batch import build_step_inputs, pack_step_inputs, unpack_step_inputs
from jaxllm.runner.model_runner import ModelRunner
from jaxllm.runner.programs import ForwardKey


def _pool_rows(hidden, query_start_loc, last_indices, pooling_type: str):
    """hidden [T, D] -> [S, D] float32: each sequence's last new row (LAST), first row (CLS) or row sum (MEAN,
    summed in float32). Rows are picked before the cast. Padding tokens lie past query_start_loc[-1] and land
    in a dropped segment; "compare_all" finds the segments without the while loop of the default search."""
    num_seqs, num_tokens = last_indices.shape[0], hidden.shape[0]
    if pooling_type == "LAST":
        return hidden[last_indices].astype(jnp.float32)
    if pooling_type == "CLS":
        return hidden[jnp.minimum(query_start_loc[:-1], num_tokens - 1)].astype(jnp.float32)
    segment = jnp.searchsorted(query_start_loc[1:], jnp.arange(num_tokens), side="right", method="compare_all")
    return jax.ops.segment_sum(hidden.astype(jnp.float32), segment, num_segments=num_seqs + 1)[:num_seqs]


def _pool_forward(graphdef, treedef, mesh, params, kv_caches, packed_inputs, *, dims, pooling_type: str,
                  token_rows: bool, attention_impl: str | None, out_sharding=None):
    """-> (kv_caches, pooled [S, D] float32, hidden [T, D] float32 or None)."""
    inputs = unpack_step_inputs(packed_inputs, *dims)
    model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, params))
    hidden, kv_caches = model.forward_paged(inputs.input_ids, inputs.positions, kv_caches, inputs.attention,
                                            attention_impl, mesh)
    with jax.named_scope("pool"):
        pooled = _pool_rows(hidden, inputs.attention.query_start_loc, inputs.logits_indices, pooling_type)
        if out_sharding is not None:
            pooled = jax.lax.with_sharding_constraint(pooled, out_sharding)
    return kv_caches, pooled, (hidden.astype(jnp.float32) if token_rows else None)


class PoolingModelRunner(ModelRunner):
    """``execute(batch) -> RunnerOutput`` with ``pooled`` filled for each sequence whose prompt ends in the
    step. ``info`` and ``head`` (a ``heads.LinearHead`` classifier, or None) define the task outputs."""

    compiles_in_background = False  # every bucket's pooled forward at start-up
    serves_prompt_embeds = False  # the pooling step reads token ids only (enable_prompt_embeds is refused)

    def __init__(self, model, cfg, mesh, args, *, info: PoolingModelInfo, head=None):
        self.info = info
        self.head = head
        self._states: dict[int, PooledState] = {}
        graphdef, state = nnx.split(model)
        _, treedef = jax.tree_util.tree_flatten(state)
        self._pool = jax.jit(functools.partial(_pool_forward, graphdef, treedef, mesh),
                             static_argnames=("dims", "pooling_type", "token_rows", "attention_impl",
                                              "out_sharding"), donate_argnums=(1,))
        super().__init__(model, cfg, mesh, args)

    # ---- compilation (replaces the generate programs) ---------------------------------------------------

    def lower(self, key: ForwardKey, lowering_platforms: tuple[str, ...] | None = None):
        """The pooled forward of ``key.bucket``; ``key.return_hidden``: also every token's hidden row (token-level
        tasks); ``key.long_prefill``: with the long-prefill attention path (``KernelPolicy``). The generate
        runner's key, so its start-up compile, long-prefill fallback and cache shrink apply unchanged."""
        return self._pool.trace(self.param_shapes, self.cache_plan.shapes(), self._padding_step(key.bucket),
                                dims=self._dims(key.bucket),
                                pooling_type=self.info.pooling_type, token_rows=key.return_hidden,
                                attention_impl=self.kernels.attention(key.long_prefill),
                                out_sharding=self._replicated).lower(lowering_platforms=lowering_platforms)

    def startup_keys(self) -> list[ForwardKey]:
        """The generate runner's start-up forwards (no sampler programs: nothing is sampled)."""
        return [k for k in super().startup_keys() if isinstance(k, ForwardKey)]

    def _run_program_once(self, key: ForwardKey, fn, warm_up: bool = True) -> None:
        """The pooled forward of ``key`` on a step that writes nothing (``warm_up``: one token reading cache slot
        0; else all padding), waited for: first-execution costs at start-up."""
        with self.device_lock:
            self.kv_caches, pooled, _ = fn(self.params, self.kv_caches, self._padding_step(key.bucket, warm_up))
        jax.block_until_ready(pooled)

    # ---- execution --------------------------------------------------------------------------------------

    def dispatch(self, batch: ScheduledBatch) -> _PoolStepInFlight:
        """Launch one step without waiting for it (the engine schedules the next one meanwhile)."""
        self.check_awake()
        if batch.swap_out or batch.swap_in:  # the host tier's copies, before the step (preemption by swap)
            self.kv_caches = self.host_kv.apply(self.kv_caches, batch.swap_out, batch.swap_in)
        bucket = self.ladder.pick(batch.num_tokens, batch.num_seqs)
        inputs = build_step_inputs(batch, bucket, self.block_size, self.max_blocks_per_seq, self._table_rows)
        token_rows = any(s.pooling_params.task.startswith("token_") for s in batch.seqs)
        program = self.programs.get(ForwardKey(bucket, token_rows, self.kernels.has_long_prefill(batch.seqs)))
        packed = jax.device_put(pack_step_inputs(inputs), self._replicated)
        self.kv_caches, pooled, hidden = program(self.params, self.kv_caches, packed)
        for leaf in (pooled, hidden):
            if leaf is not None:
                leaf.copy_to_host_async()
        self.num_steps += 1
        return _PoolStepInFlight(batch, pooled, hidden)

    def fetch(self, step: _PoolStepInFlight) -> RunnerOutput:
        """Wait for a dispatched step; add each sequence's chunk to its pooled state and finish the sequences
        whose prompt ended in it (steps are fetched in dispatch order, so chunks arrive in order)."""
        t_wait = time.perf_counter()
        pooled, hidden = jax.device_get((step.pooled, step.hidden))
        self.device_wait_seconds += time.perf_counter() - t_wait
        out = RunnerOutput(sampled={})
        offset = 0
        for i, s in enumerate(step.batch.seqs):
            if s.start == 0 or s.seq_id not in self._states:  # a new (or recomputed) prompt
                self._states[s.seq_id] = PooledState()
            state = self._states[s.seq_id]
            rows = None
            if s.pooling_params.task.startswith("token_"):
                rows = hidden[offset:offset + s.num_new_tokens]
            state.add(self.info.pooling_type, pooled[i], s.num_new_tokens, rows)
            offset += s.num_new_tokens
            if s.sample:  # the prompt's last chunk
                del self._states[s.seq_id]
                out.pooled[s.seq_id] = pooled_output(finish(self.info, self.head, state, s.pooling_params))
        return out


class _PoolStepInFlight:
    """A dispatched pooling step: its batch and the device arrays ``fetch`` reads."""

    __slots__ = ("batch", "hidden", "pooled")

    def __init__(self, batch: ScheduledBatch, pooled, hidden) -> None:
        self.batch, self.pooled, self.hidden = batch, pooled, hidden
