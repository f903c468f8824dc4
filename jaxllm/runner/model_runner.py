"""ModelRunner: the host<->device boundary. Pads each ScheduledBatch to a bucket, runs the jitted step with
the KV cache donated, and turns the sampled ids into a RunnerOutput.

Its parts, one job each: ``programs`` (keys and compiled executables, programs.py), ``kernels`` (which attention
kernels, kernel_policy.py), ``cache_plan`` (how many KV blocks, kv_cache_plan.py), prompt logprobs
(prompt_logprobs.py), speculative decoding's row layout and draft verification (``spec``, spec_rows.py), which
programs compile when (startup_programs.py), how each is lowered (lowering.py); this module builds them and
executes steps.

Start-up: every (bucket, sampler variant) program is compiled ahead of time (in parallel threads) unless
``enforce_eager``, against the KV cache's shapes before the cache is allocated, so that XLA's GPU autotuner has
that memory while it compiles; once the cache exists each program is executed once on an all-padding step, so that
first-execution costs (CUDA command buffers, Mosaic kernels loaded into the context) are paid at start-up too, as
vLLM pays them. With ``enforce_eager=True`` nothing is compiled up front and each program is compiled the first
time a step needs it (fast start-up, slow first steps); ``max_seq_len_to_capture`` limits the start-up set to the
buckets of at most that many tokens. With ``background_compile`` (the default in one process) start-up compiles
a few buckets and the other programs compile on background threads once the engine is ready, smallest first; a step
runs padded into the smallest ready bucket until its own is compiled. The few (startup_programs.py): on the CPU the
8-token bucket with the plain-sampling sampler (greedy tokens come from the forward itself), so a CPU user gets an
engine in seconds and short prompts run at once; on a GPU the buckets every step fits. Rare variants (penalties,
wide logit_bias, prompt_logprobs, logprobs above 20) are always compiled on first use. Building a runner with ``enforce_eager=True`` compiles nothing (tests build one so).
"""

from __future__ import annotations

import logging
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxllm.config import ModelConfig
from jaxllm.engine.batch import RunnerOutput, ScheduledBatch
from jaxllm.engine.host_tier import PreemptionCost
from jaxllm.engine_args import EngineArgs
from jaxllm.models.quant import forward_compiler_options
from jaxllm.parallel.multihost import local_replica, program_arg
from jaxllm.parallel.sharding import logical_to_spec, sharding_rules
from jaxllm.runner.buckets import BucketLadder
from jaxllm.runner.input_batch import (
    BlockTableRows,
    build_step_inputs,
    pack_step_inputs,
)
from jaxllm.runner.kernel_policy import KernelPolicy
from jaxllm.runner.kv_cache_plan import KVCachePlan
from jaxllm.runner.kv_swap import make_host_pool, preemption_cost_terms
from jaxllm.runner.lowering import ProgramLowering, shapes_of
from jaxllm.runner.programs import ForwardKey, Programs, SampleKey
from jaxllm.runner.prompt_embeds import PromptEmbedsInput, check_prompt_embeds
from jaxllm.runner.prompt_logprobs import prompt_logprobs
from jaxllm.runner.sampling_metadata import (
    build_sampling_metadata,
    pack_sampling_metadata,
    to_runner_output,
)
from jaxllm.runner.sleep_mode import SleepMode
from jaxllm.runner.spec_rows import SpecLayout, spec_cost_model, to_spec_runner_output
from jaxllm.runner.startup_programs import StartupPrograms
from jaxllm.runner.step import make_forward, make_prompt_logprobs, make_sample
from jaxllm.runner.weight_updates import WeightUpdates
from jaxllm.spec_decode import SpeculativeConfig
from jaxllm.spec_decode.draft_runner import make_draft
from jaxllm.spec_decode.eagle_runner import target_arrays as eagle_target_arrays

logger = logging.getLogger("jaxllm")


class ModelRunner(ProgramLowering, StartupPrograms, SleepMode, WeightUpdates):
    compiles_in_background = True  # honours ``background_compile`` (pooling runners compile all at start-up)
    serves_prompt_embeds = True  # its forward can take EmbedsPrompt rows (``enable_prompt_embeds``)

    def __init__(self, model, cfg: ModelConfig, mesh, args: EngineArgs, lora=None, structured_outputs=False):
        """``args``: resolved EngineArgs (``EngineArgs.resolve``: the scheduler limits are set). ``lora``: the LoRA
        adapter slots (jaxllm.runner.lora_slots.LoRASlots, allocated before the KV cache is sized) when LoRA is
        enabled, else None. ``structured_outputs``: the engine's tokenizer can serve constrained requests, so
        the grammar-bitmask sampler programs are compiled at start-up with the others."""
        self.lora = lora
        self.structured_outputs = structured_outputs
        self.prompt_embeds = None  # PromptEmbedsInput with enable_prompt_embeds (set with the step functions)
        self._enable_prompt_embeds = check_prompt_embeds(args, model, self.serves_prompt_embeds)
        self.cfg, self.mesh, self.block_size, self.max_model_len = cfg, mesh, args.block_size, args.max_model_len
        self.max_blocks_per_seq = -(-args.max_model_len // args.block_size)
        self.speculative_config = SpeculativeConfig.from_dict(args.speculative_config)
        self.max_logprobs = args.max_logprobs  # the logprobs width of requests above MAX_LOGPROBS (-1: vocab)
        self.logprobs_mode = args.logprobs_mode  # what logprobs report (jaxllm/models/sampler_logprobs.py)
        # (enforce_eager compiles every program on first use: nothing is left for a background thread)
        self.background_compile = (bool(args.background_compile) and self.compiles_in_background
                                   and not args.enforce_eager)
        self.ladder = BucketLadder(args.max_num_batched_tokens, args.max_num_seqs)
        self._plan_startup(args.max_seq_len_to_capture, mesh.devices.flat[0].platform, jax.process_count())
        self._split_model(model, cfg, mesh)
        self._plan_memory(cfg, mesh, args)
        self._make_step_functions(mesh, lora)
        self._enforce_eager = args.enforce_eager
        if not args.enforce_eager:
            self._start_up(mesh.devices.flat[0].platform)
        else:
            self._allocate_cache()

    def _split_model(self, model, cfg: ModelConfig, mesh) -> None:
        """The NNX model as a graph definition and flat parameter leaves (what the programs take), their shapes,
        and the shardings of the step's outputs."""
        self.forward_compile_options = forward_compiler_options(model)  # W8A8: faster GEMM autotuning
        self.graphdef, state = nnx.split(model)
        self.params, self._treedef = jax.tree_util.tree_flatten(state)
        # what programs are compiled against: a background compile may run while sleep mode drops the params
        self.param_shapes = shapes_of(self.params)
        self.dtype = jnp.dtype(cfg.dtype)
        self._replicated = NamedSharding(mesh, PartitionSpec())
        vocab_spec = logical_to_spec((None, "vocab"), sharding_rules(cfg, mesh.devices.size))
        self._vocab_logits = NamedSharding(mesh, vocab_spec) if mesh.devices.size > 1 and any(vocab_spec) else None

    def _plan_memory(self, cfg: ModelConfig, mesh, args: EngineArgs) -> None:
        """What takes device memory besides the weights, in the order it is sized: the draft model's weights,
        the KV cache plan (its shapes only until the programs are compiled), speculation's rows, the host tier;
        and the attention kernels the cache's layout allows."""
        # draft-model speculation: the draft's weights are placed before the KV cache is sized (they take memory)
        self.draft = make_draft(args, cfg, mesh, self.ladder, self.max_blocks_per_seq, eagle_target_arrays(self))
        self.cache_plan = KVCachePlan(cfg, mesh, args, self.dtype)
        # the automatic speculation rule's step costs (the engine's scheduler reads them), and the L logits rows
        # per bucket with the drafts the sampler verifies
        self.spec_cost = spec_cost_model(self.speculative_config, cfg, mesh, self.cache_plan.dtype, self.draft)
        self.spec = SpecLayout(self.speculative_config, args.max_num_seqs, self.spec_cost)
        if self.draft is not None:
            self.draft.share_device_memory(self.cache_plan, self.spec.max_spec_seqs)
        self.kv_cache_dtype = self.cache_plan.dtype
        self._set_cache_shapes(self.cache_plan.num_blocks)  # shapes only until the programs are compiled
        # the KV cache's host tier (swap_space; None when nothing would use it)
        self.host_kv = (make_host_pool(args.swap_space, self.kv_caches, self.cache_plan.sharding)
                        if args.swap_space and (args.preemption_mode != "recompute" or args.host_prefix_cache)
                        else None)
        self.kernels = KernelPolicy(cfg, self.dtype, self.kv_caches[0], mesh.devices.size,
                                    attention_backend=args.attention_backend,
                                    decode_splits=args.attention_decode_splits, fp8_dot=args.attention_fp8_dot)

    def _make_step_functions(self, mesh, lora) -> None:
        """The jitted step functions (not compiled yet), the program table and the step counters."""
        self._max_seqs = self.ladder.buckets[-1].num_seqs
        self._table_rows = BlockTableRows(self.max_blocks_per_seq)
        self._prev_tokens = jax.device_put(np.zeros(self._max_seqs, np.int32), self._replicated)
        if self._enable_prompt_embeds:
            self.prompt_embeds = PromptEmbedsInput(self.cfg.hidden_size, self.dtype, self._replicated)
        self._forward = make_forward(self.graphdef, self._treedef, mesh, with_lora=lora is not None,
                                     with_embeds=self.prompt_embeds is not None)
        self._sample = make_sample()
        self._prompt_lp = make_prompt_logprobs(self.graphdef, self._treedef, self.logprobs_mode)
        # held while a step or a background first run takes the (donated) cache, and while sleep mode frees it:
        # code that reads kv_caches while the background thread may run programs holds it too
        self.device_lock = threading.RLock()
        self.programs = Programs(self._compile, self._first_run_in_background)
        self.last_step_time = float("-inf")  # perf_counter() of the last dispatch or fetch
        self.background_first_runs = 0  # programs executed once by the background thread
        self.num_steps = 0
        self.device_wait_seconds = 0.0  # time blocked waiting for sampled ids (device busy, host idle)
        self.first_run_seconds = 0.0

    def _start_up(self, platform: str) -> None:
        """Compile the start-up programs against the cache's shapes (shrinking the cache when their temporaries
        need more room), allocate the cache, run each program once, then leave the rest to the background
        compile (``background_compile``)."""
        self.cache_plan.start_zeroing()  # on the CPU, while the programs compile
        self.warm_up()
        self._fit_cache_to_temporaries(self.programs.peak_temp_bytes())
        if self.draft is not None:
            self.draft.compile(self.num_blocks)
        self._allocate_cache()
        if self.host_kv is not None and platform != "cpu":  # kv_swap.py
            self.kv_caches = self.host_kv.warm_up(self.kv_caches)
        self._run_each_program_once()
        if self.draft is not None:
            self.draft.run_each_program_once()
        if self.background_compile:
            self.programs.compile_in_background(self.deferred_keys(), before=self._warm_up_attention_loops,
                                                workers=self.background_workers)

    # ---- KV cache ----------------------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self.cache_plan.num_blocks

    def _set_cache_shapes(self, num_blocks: int) -> None:
        """The KV cache as ShapeDtypeStructs of ``num_blocks`` blocks: what the programs are compiled against."""
        self.cache_plan.num_blocks = num_blocks
        self.kv_caches = self.cache_plan.shapes()

    def _allocate_cache(self) -> None:
        """Replace the cache's shapes by zeroed device arrays (once the programs are compiled); the draft
        model's cache (draft-model speculation) gets as many blocks."""
        self.kv_caches = self.cache_plan.allocate()
        if self.draft is not None:
            self.draft.allocate(self.num_blocks)

    def _fit_cache_to_temporaries(self, measured_bytes: int) -> None:
        """When the compiled programs need more temporaries than the cache left (``KVCachePlan.shrink_to``),
        shrink the cache and compile the programs again against its new shape."""
        if self.cache_plan.shrink_to(measured_bytes):
            self._set_cache_shapes(self.cache_plan.num_blocks)
            self.programs.drop(list(self.programs.compiled))
            self.warm_up()
            self.cache_plan.measured_activation_bytes = self.programs.peak_temp_bytes()

    def host_tier_kwargs(self, args: EngineArgs) -> dict:
        """LLMEngine's host-tier keywords: the slots, the switches, and the preemption cost rule's constants
        for this model and device (kv_swap.py)."""
        if self.host_kv is None:
            return {"num_host_blocks": 0, "preemption_mode": args.preemption_mode}
        cost = preemption_cost_terms(self.params, self.cfg, self.host_kv, self.kv_caches,
                                     self.mesh.devices.flat[0].platform)
        return {"num_host_blocks": self.host_kv.num_slots, "host_prefix_cache": args.host_prefix_cache,
                "preemption_mode": args.preemption_mode, "preemption_cost": PreemptionCost(**cost)}

    def check_lora(self, request) -> None:
        """Validate a request's LoRA adapter (loaded into host memory): ValueError/TypeError before device work."""
        if self.lora is None:
            raise ValueError("a lora_request was given but LoRA is not enabled; pass enable_lora=True")
        self.lora.check(request)

    # ---- execution -------------------------------------------------------------------------------------

    def dispatch(self, batch: ScheduledBatch, sample: bool = True) -> _StepInFlight:
        """Launch one step on the device without waiting for it; ``fetch`` returns its output. Negative input
        ids (asynchronous scheduling) are read from the sampled ids of the step dispatched just before.
        ``sample=False`` launches the forward only and ``launch_sampler`` the rest, later: structured outputs
        fill the rows' grammar bitmasks from the previous step's tokens, which the forward does not need, so
        the forward runs while the host waits for them."""
        self.check_awake()
        bucket = self.step_bucket(batch)
        rows = self.spec.step_rows(batch, bucket)  # L with speculative decoding, else None (S)
        inputs = build_step_inputs(batch, bucket, self.block_size, self.max_blocks_per_seq, self._table_rows, rows)
        want_prompt_lp = any(s.want_prompt_logprobs for s in batch.seqs)
        # outside the lock: a program still compiling in the background takes it for its first run
        forward = self.programs.get(ForwardKey(bucket, want_prompt_lp, self.kernels.has_long_prefill(batch.seqs)))
        packed = pack_step_inputs(inputs)
        with self.device_lock:
            if batch.swap_out or batch.swap_in:  # the host tier's copies, before the step (host_tier.py)
                self.kv_caches = self.host_kv.apply(self.kv_caches, batch.swap_out, batch.swap_in)
            if self.lora is not None:  # each token's adapter slot (loads adapters into slots where needed)
                packed = np.concatenate([packed, self.lora.step_slots(batch.seqs, bucket.num_tokens)])
            embeds = () if self.prompt_embeds is None else self.prompt_embeds.step(
                batch, bucket, inputs.attention.query_start_loc)
            self.kv_caches, logits, hidden, greedy = forward(self.params, self.kv_caches, self._step_arg(packed),
                                                             self._prev_tokens, self._lora_stacks(), embeds)
            if getattr(self.draft, "records_hidden", False):  # EAGLE: the head reads the target's states
                self.draft.record_hidden(hidden, inputs.attention.slot_mapping)
        self.num_steps += 1
        self.last_step_time = time.perf_counter()
        step = _StepInFlight(batch, None, hidden if want_prompt_lp else None)
        step.draft_probs = None if self.draft is None else self.draft.take_probs()  # sampled drafts' q
        step.logits, step.num_seqs, step.greedy = logits, rows or bucket.num_seqs, greedy  # sampler rows: S, or L
        if sample:
            self.launch_sampler(step)
        return step

    def launch_sampler(self, step: _StepInFlight) -> None:
        """Launch the sampler of a dispatched step (its rows' sampling metadata is read now). With speculative
        decoding the program also verifies the drafts (``spec_rows.py``)."""
        rows, seqs = step.num_seqs, step.batch.seqs
        md, sampler_config = build_sampling_metadata(self.spec.rows(seqs), rows, self.cfg.vocab_size,
                                                     self.max_logprobs, self.logprobs_mode)
        if sampler_config.greedy_only and not self.spec.enabled:  # the forward's argmax: no sampler program
            self._prev_tokens = step.greedy.token_ids
            self._set_sampled(step, step.greedy)
            return
        probs = step.draft_probs if sampler_config.random else None  # else every draft is an argmax
        variant = self.programs.sampler_variant(rows, sampler_config)
        sampler = self.programs.get(SampleKey(rows, variant, sampled_drafts=probs is not None))
        out = sampler(step.logits, self._step_arg(pack_sampling_metadata(md, sampler_config, rows)),
                      *map(self._step_arg, self.spec.verify_args(seqs, rows, probs)),
                      *(() if probs is None else (probs.arrays,)))
        if self.spec.enabled:  # (SamplerOutput [L], valid [L], prev_tokens)
            self._prev_tokens, sampled = out[2], out[:2]
        else:
            sampled, self._prev_tokens = out, out.token_ids
        self._set_sampled(step, sampled)

    def _step_arg(self, host_array: np.ndarray):
        """A step's host array as a program argument on the replicated layout (``program_arg``)."""
        return program_arg(host_array, self._replicated)

    @staticmethod
    def _set_sampled(step: _StepInFlight, sampled) -> None:
        """Record a launched step's sampler output and start its transfer to the host."""
        step.sampled, step.logits, step.greedy = sampled, None, None
        for leaf in jax.tree_util.tree_leaves(sampled):
            leaf.copy_to_host_async()  # start the transfer as soon as the step ends

    def fetch(self, step: _StepInFlight) -> RunnerOutput:
        """Wait for a dispatched step and return its sampled tokens (and logprobs)."""
        t_wait = time.perf_counter()
        sampled = jax.device_get(local_replica(step.sampled))  # the only host<->device sync of a step
        self.last_step_time = time.perf_counter()
        self.device_wait_seconds += self.last_step_time - t_wait
        if self.spec.enabled:
            out = to_spec_runner_output(step.batch.seqs, *sampled)
        else:
            out = to_runner_output(step.batch.seqs, sampled)
        if step.hidden is not None:
            out.prompt_logprobs = prompt_logprobs(step.batch, step.hidden, self._prompt_lp, self.params,
                                                  self.cfg.vocab_size, self.max_logprobs)
        return out

    def propose_drafts(self, items) -> list[tuple[int, ...]]:
        """Draft-model speculation (the scheduler's ``drafter``): [(sequence, n)] -> n draft ids each
        (``DraftRunner.propose``)."""
        if self.draft is None:
            raise RuntimeError("propose_drafts needs speculative_config method='draft_model' or 'eagle'")
        self.check_awake()
        return self.draft.propose(items)

    def execute(self, batch: ScheduledBatch) -> RunnerOutput:
        """One synchronous step: ``fetch(dispatch(batch))``."""
        return self.fetch(self.dispatch(batch))


class _StepInFlight:
    """A dispatched step: its batch and the device arrays that ``ModelRunner.fetch`` reads."""

    __slots__ = ("batch", "draft_probs", "greedy", "hidden", "logits", "num_seqs", "sampled")

    def __init__(self, batch: ScheduledBatch, sampled, hidden) -> None:
        self.batch, self.sampled, self.hidden = batch, sampled, hidden
        # until launch_sampler: the forward's logits, the padded row count, the forward's greedy ids
        self.logits = self.num_seqs = self.greedy = self.draft_probs = None
