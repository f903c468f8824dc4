"""ModelRunner: the host<->device boundary. Pads each ScheduledBatch to a bucket, runs the jitted step with
the KV cache donated, and turns the sampled ids into a RunnerOutput.

Compilation: every (bucket, sampler variant) program is compiled ahead of time at start-up (in parallel
threads; XLA compiles outside the GIL) unless ``enforce_eager``, against the KV cache's shapes before the cache
is allocated, so that XLA's GPU autotuner has that memory while it compiles; once the cache exists each program
is executed once on an all-padding step, so that first-execution costs are paid at start-up too. With
``enforce_eager=True`` nothing is compiled up front and each program is compiled the first time a step needs it,
which is what "eager" can mean for a JAX engine: start-up is fast, the first steps are slow. Rare variants (penalties, wide logit_bias,
prompt_logprobs) are always compiled on first use. ``num_compilations`` counts every compile.

Long prefills: when the attention implementation splits prefills by length (``prefill_split``: under
``pallas_mosaic``, the default on Hopper where the model's shapes allow, the Mosaic GPU prefill takes sequences of
>= 2048 new tokens), the buckets that can hold such a prefill get a second forward program with that path, used
only by steps that have one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxllm import ops
from jaxllm.config import ModelConfig
from jaxllm.engine.batch import RunnerOutput, ScheduledBatch, TokenLogprobs
from jaxllm.engine_args import EngineArgs
from jaxllm.models.quant import forward_compiler_options
from jaxllm.parallel.sharding import cache_kv_heads, logical_to_spec, sharding_rules
from jaxllm.runner.buckets import Bucket, BucketLadder
from jaxllm.runner.input_batch import BlockTableRows, build_step_inputs, dummy_step_inputs, pack_step_inputs
from jaxllm.runner.memory import (
    GPU_SLACK_BYTES,
    activation_reserve_bytes,
    kv_bytes_per_block,
    plan_num_blocks,
)
from jaxllm.runner.sampler_config import SAMPLE_CONFIG, STARTUP_CONFIGS, covers
from jaxllm.runner.sampling_metadata import (
    build_sampling_metadata,
    dummy_sampling_metadata,
    pack_sampling_metadata,
    to_runner_output,
)
from jaxllm.runner.sleep_mode import SleepMode
from jaxllm.runner.weight_updates import WeightUpdates
from jaxllm.runner.step import make_forward, make_prompt_logprobs, make_sample

logger = logging.getLogger("jaxllm")

PROMPT_LOGPROBS_CHUNK = 128  # rows of [chunk, V] logits computed at a time for prompt_logprobs
PROMPT_LOGPROBS_K = 20


class ModelRunner(SleepMode, WeightUpdates):
    def __init__(self, model, cfg: ModelConfig, mesh, args: EngineArgs):
        """``args``: resolved EngineArgs (``EngineArgs.resolve``: the scheduler limits are set)."""
        block_size, max_num_seqs = args.block_size, args.max_num_seqs
        max_num_batched_tokens, max_model_len = args.max_num_batched_tokens, args.max_model_len
        num_gpu_blocks_override, kv_cache_memory_bytes = args.num_gpu_blocks_override, args.kv_cache_memory_bytes
        self.cfg = cfg
        self.mesh = mesh
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.max_blocks_per_seq = -(-max_model_len // block_size)
        self.attention_impl = args.attention_backend
        self._attention_impl_asked = args.attention_backend is not None
        self._attention_tuning = {"decode_splits": args.attention_decode_splits,
                                  "fp8_dot": args.attention_fp8_dot or "auto"}
        self.max_seq_len_to_capture = args.max_seq_len_to_capture
        self.ladder = BucketLadder(max_num_batched_tokens, max_num_seqs)
        self.forward_compile_options = forward_compiler_options(model)  # W8A8: faster GEMM autotuning
        self.graphdef, state = nnx.split(model)
        self.params, self._treedef = jax.tree_util.tree_flatten(state)
        self.dtype = jnp.dtype(cfg.dtype)
        self.kv_cache_dtype = ops.paged_attention.resolve_kv_cache_dtype(args.kv_cache_dtype, self.dtype)
        self._replicated = NamedSharding(mesh, PartitionSpec())
        tp = mesh.devices.size
        vocab_spec = logical_to_spec((None, "vocab"), sharding_rules(cfg, tp))
        self._vocab_logits = NamedSharding(mesh, vocab_spec) if tp > 1 and any(vocab_spec) else None
        self.activation_reserve_bytes = activation_reserve_bytes(cfg, max_num_batched_tokens, max_num_seqs, tp)
        self.measured_activation_bytes: int | None = None  # XLA's temp size of the largest program (warm-up)
        self.num_blocks = plan_num_blocks(
            cfg, device=mesh.devices.flat[0], block_size=block_size, dtype_bytes=self.kv_cache_dtype.itemsize,
            max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
            gpu_memory_utilization=args.gpu_memory_utilization, num_gpu_blocks_override=num_gpu_blocks_override,
            kv_cache_memory_bytes=kv_cache_memory_bytes, tp=tp)
        # the cache was sized from what device memory is left after the reserve: it shrinks if XLA needs more
        self._cache_fills_device = (num_gpu_blocks_override is None and kv_cache_memory_bytes is None
                                    and mesh.devices.flat[0].platform != "cpu")
        cache_spec = logical_to_spec(("cache_kv", "cache_blocks", "cache_slots", "cache_heads", None),
                                     sharding_rules(cfg, tp))
        self._cache_sharding = NamedSharding(mesh, cache_spec)
        self._kv_heads_per_cache = cache_kv_heads(cfg.num_kv_heads, tp)
        self._bytes_per_block = kv_bytes_per_block(cfg, block_size, self.kv_cache_dtype.itemsize, tp)
        # Shapes only until warm-up has compiled the programs: XLA's autotuner needs device memory while it
        # compiles (several programs at once, in threads), memory the cache takes once it exists.
        self._set_cache_shapes(self.num_blocks)
        # (impl of other steps, impl of steps with a prefill of >= min_len new tokens, min_len), or None
        self.prefill_split = self._choose_prefill_split()
        self._max_seqs = self.ladder.buckets[-1].num_seqs
        self._table_rows = BlockTableRows(self.max_blocks_per_seq)
        self._prev_tokens = jax.device_put(np.zeros(self._max_seqs, np.int32), self._replicated)
        self._forward = make_forward(self.graphdef, self._treedef, mesh)
        self._sample = make_sample()
        self._prompt_lp = make_prompt_logprobs(self.graphdef, self._treedef)
        self._compiled: dict = {}
        self._enforce_eager = args.enforce_eager
        self._background: dict = {}  # key -> Future of a program compiling on a background thread
        self.compile_seconds = 0.0
        self.num_steps = 0
        self.device_wait_seconds = 0.0  # time blocked waiting for sampled ids (device busy, host idle)
        self.first_run_seconds = 0.0
        if not args.enforce_eager:
            self.warm_up()
            self._shrink_cache_to_measured_temporaries()
        self._allocate_cache()
        if not args.enforce_eager:
            self._run_each_program_once()

    def _choose_prefill_split(self):
        """``ops.paged_attention.prefill_split`` for this model's query / cache shapes and dtypes (the Mosaic GPU
        prefill is the Hopper default for long prefills where it covers them, on one device). Layers with a
        sliding window stay on the Triton prefill inside the long-prefill programs; the split needs one layer
        without."""
        q = jax.ShapeDtypeStruct((1, self.cfg.num_heads, self.cfg.head_dim), self.dtype)
        windows = self.cfg.sliding_windows or (None,)
        window = None if None in windows else windows[0]
        if (self.mesh.devices.size > 1 and not self._attention_impl_asked
                and ops.paged_attention.default_impl(q, self.kv_caches[0]) == "pallas_mosaic"):
            # never run under tensor parallelism (inside shard_map) on a GPU yet: Triton until measured there
            self.attention_impl = "pallas_triton"
            return None
        return ops.paged_attention.prefill_split(self.attention_impl, q, self.kv_caches[0], window,
                                                 self.cfg.attn_logit_softcap)

    def _allocate_cache(self) -> None:
        """Replace the cache's shapes by zeroed device arrays (once the programs are compiled)."""
        self.kv_caches = ops.allocate_kv_cache(
            self.cfg.num_layers, self.num_blocks, self.block_size, self._kv_heads_per_cache, self.cfg.head_dim,
            self.kv_cache_dtype, self._cache_sharding)

    def _set_cache_shapes(self, num_blocks: int) -> None:
        """The KV cache as ShapeDtypeStructs of ``num_blocks`` blocks: what the programs are compiled against."""
        self.num_blocks = num_blocks
        shape = ops.paged_attention.kv_cache_shape(num_blocks, self.block_size, self._kv_heads_per_cache,
                                                   self.cfg.head_dim)
        self.kv_caches = [jax.ShapeDtypeStruct(shape, self.kv_cache_dtype, sharding=self._cache_sharding)
                          for _ in range(self.cfg.num_layers)]

    def _shrink_cache_to_measured_temporaries(self) -> None:
        """When XLA's measured temporaries exceed the reserve the cache was sized with, take the difference
        (plus a slack) from the cache and compile again (the programs depend on the cache's shape): a slower
        start-up instead of running out of memory in the middle of ``generate``."""
        short = (self.measured_activation_bytes or 0) - self.activation_reserve_bytes
        if short <= 0 or not self._cache_fills_device:
            return
        fewer = -(-(short + GPU_SLACK_BYTES) // self._bytes_per_block)
        if fewer >= self.num_blocks:
            raise ValueError(f"the step needs {self.measured_activation_bytes / 2**30:.2f} GiB of temporaries, "
                             f"more than the KV cache's {self.num_blocks} blocks free: lower max_num_batched_tokens "
                             f"or max_num_seqs, or raise gpu_memory_utilization")
        logger.warning("the step needs %.2f GiB of temporaries but %.2f GiB were reserved: the KV cache gets %d "
                       "blocks instead of %d; compiling again", self.measured_activation_bytes / 2**30,
                       self.activation_reserve_bytes / 2**30, self.num_blocks - fewer, self.num_blocks)
        self.activation_reserve_bytes = self.measured_activation_bytes + GPU_SLACK_BYTES
        self._set_cache_shapes(self.num_blocks - fewer)
        self._compiled.clear()
        self.warm_up()

    # ---- compilation -----------------------------------------------------------------------------------

    def _compile(self, key):
        """key: ("forward", Bucket, return_hidden, long_prefill) or ("sample", num_seqs, SamplerConfig)."""
        if key[0] == "forward":
            _, bucket, return_hidden, long_prefill = key
            return self._forward.lower(self.params, self.kv_caches, self._padding_step(bucket), self._prev_tokens,
                                       dims=self._dims(bucket),
                                       return_hidden=return_hidden,
                                       attention_impl=self._attention_impl(long_prefill),
                                       logits_sharding=self._replicated,
                                       vocab_logits_sharding=self._vocab_logits
                                       ).compile(compiler_options=self.forward_compile_options)
        _, num_seqs, config = key
        logits = jax.ShapeDtypeStruct((num_seqs, self.cfg.vocab_size), jnp.float32, sharding=self._replicated)
        return self._sample.lower(logits, self._neutral_sampling(num_seqs, config), config=config,
                                  out_rows=self._max_seqs).compile()

    def _padding_step(self, bucket: Bucket):
        """A bucket's all-padding step inputs (no sequence, nothing written), packed and on the device: what its
        forward programs are compiled against and first run on."""
        return jax.device_put(pack_step_inputs(dummy_step_inputs(bucket, self.max_blocks_per_seq)), self._replicated)

    def _neutral_sampling(self, num_seqs: int, config):
        """Neutral sampling metadata of ``config``'s shapes, packed and on the device (compile and first run)."""
        md = dummy_sampling_metadata(config, num_seqs, self.cfg.vocab_size)
        return jax.device_put(pack_sampling_metadata(md, config, num_seqs), self._replicated)

    def _attention_impl(self, long_prefill: bool) -> ops.paged_attention.AttentionConfig:
        """The attention implementation and tuning a forward program is compiled with."""
        name = self.attention_impl
        if self.prefill_split is not None:
            name = self.prefill_split[1] if long_prefill else self.prefill_split[0]
        return ops.paged_attention.AttentionConfig(name, **self._attention_tuning)

    def _long_prefill_buckets(self) -> list[Bucket]:
        """Buckets that can hold a long prefill (with ``prefill_split``): each gets a second forward program."""
        if self.prefill_split is None:
            return []
        return [b for b in self.ladder.buckets if b.num_tokens >= self.prefill_split[2]]

    def _dims(self, bucket: Bucket) -> tuple[int, int, int]:
        return bucket.num_tokens, bucket.num_seqs, self.max_blocks_per_seq

    def prepare_structured_outputs(self) -> None:
        """Structured outputs are coming (the engine's first constrained request): compile the sampler variant
        with a grammar bitmask (``SAMPLE_CONFIG`` + ``grammar_words``, which covers greedy and temperature
        rows) for every sequence bucket on a background thread, while the steps of other requests run and the
        grammars compile. A step that needs one before it is ready waits for it (``_get_compiled``)."""
        if self._background or self._enforce_eager:
            return
        config = dataclasses.replace(SAMPLE_CONFIG, grammar_words=-(-self.cfg.vocab_size // 32))
        keys = [("sample", s, config) for s in sorted({b.num_seqs for b in self.ladder.buckets})]
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxllm-compile")
        self._background = {k: pool.submit(self._compile, k) for k in keys if k not in self._compiled}
        pool.shutdown(wait=False)

    def _get_compiled(self, key):
        fn = self._compiled.get(key)
        if fn is None and key in self._background:
            t0 = time.perf_counter()
            fn = self._compiled[key] = self._background.pop(key).result()
            self.compile_seconds += time.perf_counter() - t0  # only the part the step waited for
        if fn is None:
            t0 = time.perf_counter()
            fn = self._compiled[key] = self._compile(key)
            self.compile_seconds += time.perf_counter() - t0
            logger.info("compiled %s in %.1fs", key, time.perf_counter() - t0)
        return fn

    def _sampler_variant(self, num_seqs: int, config):
        """``config``, or the cheapest compiled variant that covers it (no compile during generate)."""
        if ("sample", num_seqs, config) in self._compiled:
            return config
        compiled = [k[2] for k in [*self._compiled, *self._background]
                    if k[0] == "sample" and k[1] == num_seqs and covers(k[2], config)]
        if not compiled:
            return config
        return min(compiled, key=lambda c: (c.num_logprobs, c.top_k_top_p, c.min_p, c.random))

    def warm_up(self) -> None:
        """Compile the forward of every bucket and the start-up sampler variants, in parallel threads."""
        buckets = [b for b in self.ladder.buckets
                   if self.max_seq_len_to_capture is None or b.num_tokens <= self.max_seq_len_to_capture]
        keys = [("forward", b, False, False) for b in buckets]
        keys += [("forward", b, False, True) for b in self._long_prefill_buckets() if b in buckets]
        keys += [("sample", s, c) for s in sorted({b.num_seqs for b in self.ladder.buckets}) for c in STARTUP_CONFIGS]
        t0 = time.perf_counter()
        logger.info("compiling %d programs (KV cache: %d blocks)", len(keys), self.num_blocks)
        workers = max(1, min(len(keys), os.cpu_count() or 2))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(self._compile, key): key for key in keys}
            try:
                # logged as each finishes, so a start-up cut short by a time limit shows which programs were slow
                for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                    key = futures[future]
                    try:
                        fn = future.result()
                    except Exception as error:
                        if not self._drop_long_prefill_programs(key, error):
                            raise
                        continue
                    if key[0] == "forward" and key[3] and self.prefill_split is None:
                        continue  # the long-prefill programs were dropped while this one compiled
                    self._compiled[key] = fn
                    logger.info("compiled %d/%d %s at %.1fs", done, len(keys), key, time.perf_counter() - t0)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # a failed compile need not wait for the rest
                raise
        self.compile_seconds += time.perf_counter() - t0
        logger.info("compiled %d programs in %.1fs", len(keys), time.perf_counter() - t0)
        self._check_activation_reserve()

    def _drop_long_prefill_programs(self, key, error: Exception) -> bool:
        """A long-prefill program failed to compile. When its implementation was the default, not asked for
        (``attention_backend``, or its ``JAXLLM_ATTENTION_IMPL`` default), warn and run every step with the other programs'
        implementation (what Mosaic GPU lowers differs between jax versions); else the error is the caller's."""
        if key[0] != "forward" or not key[3] or self._attention_impl_asked:
            return False
        if self.prefill_split is not None:
            logger.warning("the %s prefill does not compile here (%s: %s); every step uses %s",
                           self.prefill_split[1], type(error).__name__, (str(error).splitlines() or [""])[0][:200],
                           self.prefill_split[0])
            self.attention_impl = self.prefill_split[0]
            self.prefill_split = None
            for k in [k for k in self._compiled if k[0] == "forward" and k[3]]:
                del self._compiled[k]
        return True

    def _check_activation_reserve(self) -> None:
        """Compare XLA's measured temporaries of the largest programs with the reserve the KV cache left."""
        temps = [self._compiled[k].memory_analysis() for k in self._compiled]
        peak = max((getattr(t, "temp_size_in_bytes", 0) or 0 for t in temps), default=0)
        self.measured_activation_bytes = peak
        if peak > self.activation_reserve_bytes and not self._cache_fills_device:
            logger.warning("the step needs %.2f GiB of temporaries but %.2f GiB were reserved: lower "
                           "gpu_memory_utilization or max_num_batched_tokens if the device runs out of memory",
                           peak / 2**30, self.activation_reserve_bytes / 2**30)

    def _run_each_program_once(self) -> None:
        """Execute every compiled program once on an all-padding step (no sequence: nothing is written to the
        cache) and wait for it. A program's first execution carries one-time costs that compiling does not pay:
        XLA records its CUDA command buffers, and each Mosaic GPU custom call loads its kernel into the CUDA
        context. Without this they land in the first steps of ``generate`` that use each bucket (as vLLM, we pay
        them at start-up, where they are counted)."""
        t0 = time.perf_counter()
        for key, fn in self._compiled.items():
            if key[0] == "forward":
                self.kv_caches, logits, _ = fn(self.params, self.kv_caches, self._padding_step(key[1]),
                                               self._prev_tokens)
            else:
                _, num_seqs, config = key
                logits = jax.device_put(np.zeros((num_seqs, self.cfg.vocab_size), np.float32), self._replicated)
                logits = fn(logits, self._neutral_sampling(num_seqs, config))
            jax.block_until_ready(logits)  # one at a time: no two programs' temporaries live together
        self.first_run_seconds = time.perf_counter() - t0
        logger.info("ran each of %d programs once in %.1fs", len(self._compiled), self.first_run_seconds)

    @property
    def num_compilations(self) -> int:
        """Programs compiled so far: step variants plus prompt-logprob programs."""
        return len(self._compiled) + self._prompt_lp._cache_size()

    # ---- execution -------------------------------------------------------------------------------------

    def dispatch(self, batch: ScheduledBatch, sample: bool = True) -> _StepInFlight:
        """Launch one step on the device without waiting for it; ``fetch`` returns its output. Negative input
        ids (asynchronous scheduling) are read from the sampled ids of the step dispatched just before.
        ``sample=False`` launches the forward only and ``launch_sampler`` the rest, later: structured outputs
        fill the rows' grammar bitmasks from the previous step's tokens, which the forward does not need, so
        the forward runs while the host waits for them."""
        self.check_awake()
        bucket = self.ladder.pick(batch.num_tokens, batch.num_seqs)
        inputs = build_step_inputs(batch, bucket, self.block_size, self.max_blocks_per_seq, self._table_rows)
        want_prompt_lp = any(s.want_prompt_logprobs for s in batch.seqs)
        long_prefill = self.prefill_split is not None and any(
            s.num_new_tokens >= self.prefill_split[2] for s in batch.seqs)
        forward = self._get_compiled(("forward", bucket, want_prompt_lp, long_prefill))
        dev_inputs = jax.device_put(pack_step_inputs(inputs), self._replicated)
        self.kv_caches, logits, hidden = forward(self.params, self.kv_caches, dev_inputs, self._prev_tokens)
        self.num_steps += 1
        step = _StepInFlight(batch, None, hidden if want_prompt_lp else None)
        step.logits, step.num_seqs = logits, bucket.num_seqs
        if sample:
            self.launch_sampler(step)
        return step

    def launch_sampler(self, step: _StepInFlight) -> None:
        """Launch the sampler of a dispatched step (its rows' sampling metadata is read now)."""
        num_seqs = step.num_seqs
        md, sampler_config = build_sampling_metadata(step.batch.seqs, num_seqs, self.cfg.vocab_size)
        sampler = self._get_compiled(("sample", num_seqs, self._sampler_variant(num_seqs, sampler_config)))
        dev_md = jax.device_put(pack_sampling_metadata(md, sampler_config, num_seqs), self._replicated)
        sampled = step.sampled = sampler(step.logits, dev_md)
        step.logits = None
        self._prev_tokens = sampled.token_ids
        for leaf in jax.tree_util.tree_leaves(sampled):
            leaf.copy_to_host_async()  # start the transfer as soon as the step ends

    def fetch(self, step: _StepInFlight) -> RunnerOutput:
        """Wait for a dispatched step and return its sampled tokens (and logprobs)."""
        t_wait = time.perf_counter()
        sampled = jax.device_get(step.sampled)  # the only host<->device sync of a step
        self.device_wait_seconds += time.perf_counter() - t_wait
        out = to_runner_output(step.batch.seqs, sampled)
        if step.hidden is not None:
            out.prompt_logprobs = self._prompt_logprobs(step.batch, step.hidden)
        return out

    def execute(self, batch: ScheduledBatch) -> RunnerOutput:
        """One synchronous step: ``fetch(dispatch(batch))``."""
        return self.fetch(self.dispatch(batch))

    def _prompt_logprobs(self, batch: ScheduledBatch, hidden) -> dict[int, list[TokenLogprobs]]:
        """Logprobs of prompt tokens start+1..end for the sequences that asked, from the step's hidden states."""
        rows, targets, owners = [], [], []
        offset = 0
        for s in batch.seqs:
            if s.want_prompt_logprobs:
                last = min(s.end, s.num_prompt_tokens - 1)  # positions whose next token is a prompt token
                for p in range(s.start, last):
                    rows.append(offset + p - s.start)
                    targets.append(s.token_ids[p + 1])
                    owners.append(s)
            offset += s.num_new_tokens
        result: dict[int, list[TokenLogprobs]] = {s.seq_id: [] for s in batch.seqs if s.want_prompt_logprobs}
        n = PROMPT_LOGPROBS_CHUNK
        for c in range(0, len(rows), n):
            idx = np.zeros(n, np.int32)
            tgt = np.zeros(n, np.int32)
            chunk = rows[c:c + n]
            idx[:len(chunk)], tgt[:len(chunk)] = chunk, targets[c:c + n]
            lp, rank, top_ids, top_lp = jax.device_get(
                self._prompt_lp(self.params, hidden[idx], jnp.asarray(tgt), k=PROMPT_LOGPROBS_K))
            for j in range(len(chunk)):
                s = owners[c + j]
                k = s.sampling_params.prompt_logprobs
                top = [(int(top_ids[j, i]), float(top_lp[j, i])) for i in range(min(k, PROMPT_LOGPROBS_K))]
                result[s.seq_id].append(TokenLogprobs(int(tgt[j]), float(lp[j]), int(rank[j]), top))
        return result


class _StepInFlight:
    """A dispatched step: its batch and the device arrays that ``ModelRunner.fetch`` reads."""

    __slots__ = ("batch", "hidden", "logits", "num_seqs", "sampled")

    def __init__(self, batch: ScheduledBatch, sampled, hidden) -> None:
        self.batch, self.sampled, self.hidden = batch, sampled, hidden
        self.logits = self.num_seqs = None  # until launch_sampler: the forward's logits, the padded row count
