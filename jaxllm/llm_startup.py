"""The start-up of a generating ``LLM``, in order: the process's JAX settings (before any device work), the
model located and the settings resolved for the device, the weights and the tokenizer loaded side by side, one
ModelRunner per local replica (which compiles its programs), then the engine (one ``LLMEngine`` per replica,
under a ``DataParallelEngine`` when there are several). Pooling models start in ``jaxllm.pooling.api``."""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import time
from typing import Any

from jaxllm.engine import LLMEngine
from jaxllm.engine.data_parallel import DataParallelEngine, RemoteReplica
from jaxllm.engine_args import EngineArgs, derived_max_model_len
from jaxllm.generation_config import default_sampling_params, eos_token_ids, read_generation_config

logger = logging.getLogger("jaxllm")

CACHE_MAX_BYTES = 16 << 30  # the persistent compilation cache's bound (see enable_compilation_cache)


def prepare_process(args: EngineArgs) -> None:
    """What must precede any device work: ``jax.distributed`` under the external launcher, the share of GPU
    memory XLA may take (``gpu_memory_utilization``), the persistent compilation cache, and Flax NNX's import
    (before the model modules import it)."""
    if args.distributed_executor_backend == "external_launcher":
        from jaxllm.parallel.multihost import initialize_distributed

        initialize_distributed()
    from jaxllm.runner.memory import request_memory_fraction

    request_memory_fraction(args.gpu_memory_utilization)
    enable_compilation_cache(args.cache_dir)
    from jaxllm.flax_import import import_flax_nnx

    import_flax_nnx()


def enable_compilation_cache(where: str | None) -> None:
    """JAX's persistent compilation cache in ``where`` (``EngineArgs.cache_dir``; None disables it), unless the
    user configured one already.

    The cache is size-bounded (``CACHE_MAX_BYTES``, least recently used entries evicted) because only a bounded
    cache takes JAX's file lock around each read and write: unbounded, an entry is written in place, and another
    process on the machine (a second notebook, a data-parallel replica) that reads it mid-write gets a torn
    executable, which XLA may abort on instead of raising."""
    import jax

    if where is None or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", where)
    # cache every program, also the small sampler ones (JAX's default skips compiles under 1 s)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if jax.config.jax_compilation_cache_max_size == -1:  # (unbounded: JAX's default)
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)


def resolve_on_device(args: EngineArgs, cfg) -> EngineArgs:
    """``args`` resolved for the first device's platform and the model's length (before any weight reaches a
    device); warns when a CPU run keeps a dtype that XLA's CPU matmuls run slowly."""
    import jax

    platform = jax.devices()[0].platform
    args = args.resolve(platform, derived_max_model_len(cfg), num_processes=jax.process_count())
    if cfg.position_embedding == "learned" and args.max_model_len > cfg.max_position_embeddings:
        raise ValueError(f"max_model_len={args.max_model_len} is greater than {cfg.architecture}'s "
                         f"{cfg.max_position_embeddings} learned positions (max_position_embeddings); a position "
                         "past the table has no embedding, even with allow_long_max_model_len")
    if platform == "cpu" and cfg.dtype != "float32":
        logger.warning("dtype %s on the CPU: XLA's CPU matmuls in %s are an order of magnitude slower than in "
                       "float32 (SmolLM2-135M's decode step: 13x); pass dtype='float32' for speed", cfg.dtype,
                       cfg.dtype)
    return args


class GenerateStartup:
    """Mixed into ``LLM``: ``_init_generate`` sets ``model_config``, ``engine_args``, ``model_path``,
    ``tokenizer``, ``load_seconds``, ``llm_engine`` and the request counter and default sampling params."""

    def _init_generate(self, args: EngineArgs, in_memory: bool) -> None:
        from jaxllm.load import locate_in_memory_model, locate_model

        source, model_obj = locate_in_memory_model(args) if in_memory else (locate_model(args), None)
        args = resolve_on_device(args, source.config)
        self.model_config, self.engine_args, self.model_path = source.config, args, source.path
        runners = self._load_runners(args, source, model_obj, in_memory)
        gen = read_generation_config(args, source.path)
        self.llm_engine = build_engine(args, source.config, runners, self.tokenizer, gen)
        self._request_counter = itertools.count()
        self._default_params = default_sampling_params(gen)

    def _load_runners(self, args: EngineArgs, source, model_obj: Any, in_memory: bool) -> list:
        """One ModelRunner per replica (None: another process's), with ``self.tokenizer`` and
        ``self.load_seconds`` set. The tokenizer (transformers' import, a GGUF's vocabulary) loads on a thread
        while the weights load, and a GGUF file's own (always a fast one) also while the programs compile:
        whether constrained requests can run is known without it. Any other's errors surface before anything
        is compiled."""
        from jaxllm.load import (
            build_model,
            grammar_capable_before_loading,
            load_tokenizer_for,
            replica_models,
        )
        from jaxllm.runner.model_runner import ModelRunner
        from jaxllm.structured_outputs.grammar import grammar_capable

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxllm-tokenizer") as pool:
            tokenizer = pool.submit(load_tokenizer_for, args, source)
            t_load = time.perf_counter()
            model_obj = model_obj or build_model(args, source)
            self.load_seconds = time.perf_counter() - t_load
            constrained = grammar_capable_before_loading(args, source)
            if constrained is None:
                self.tokenizer = tokenizer.result()
                constrained = grammar_capable(self.tokenizer)  # compile the grammar-bitmask sampler at start-up too
            lora_slots = lora_slots_for(args, source.config, source.mesh, source.path, model_obj)  # before the KV cache
            runners = [None if replica is None else ModelRunner(replica, source.config, mesh, args, lora=lora_slots,
                                                                structured_outputs=constrained)
                       for replica, mesh in replica_models(model_obj, args, source)]
            self.tokenizer = tokenizer.result()
        for runner_obj in [r for r in runners if r is not None] if not in_memory else ():
            # wake_up after sleep(level=2) reads the checkpoint again
            runner_obj.weights_source = functools.partial(build_model, args, source.on_mesh(runner_obj.mesh))
            runner_obj.load_args = args  # update_config changes its load_format for reload_weights
        return runners


def build_engine(args: EngineArgs, cfg, runners: list, tokenizer: Any, gen: dict) -> Any:
    """One LLMEngine per replica (a remote one, None in ``runners``, through ``RemoteReplica``: the same model and
    args as the first local one), under a DataParallelEngine when there are several (exchanging their state
    across processes under ``jax.distributed``)."""
    import jax

    local = [r for r in runners if r is not None]
    engines = [LLMEngine(
        runner_obj or RemoteReplica(rank), num_blocks=(runner_obj or local[0]).num_blocks,
        block_size=args.block_size,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len, vocab_size=cfg.vocab_size,
        enable_prefix_caching=args.enable_prefix_caching, eos_token_ids=eos_token_ids(tokenizer, gen, cfg),
        tokenizer=tokenizer, seed=args.seed, async_scheduling=args.async_scheduling,
        max_logprobs=args.max_logprobs, log_stats=not args.disable_log_stats,
        scheduling_policy=args.scheduling_policy, model_config=cfg, model_name=args.model_name,
        **(runner_obj or local[0]).host_tier_kwargs(args),
        structured_outputs_config=args.structured_outputs_config,
        max_loras=args.max_loras if args.enable_lora else None,
        speculative_config=args.speculative_config, enable_prompt_embeds=args.enable_prompt_embeds)
        for rank, runner_obj in enumerate(runners)]
    if len(engines) == 1:
        return engines[0]
    from jaxllm.parallel.multihost import allgather_objects

    return DataParallelEngine(engines, exchange=allgather_objects if jax.process_count() > 1 else None)


def lora_slots_for(args: EngineArgs, cfg, mesh, model_path: str, model):
    """The device slots of LoRA adapters (jaxllm.runner.lora_slots) when ``enable_lora``, else None."""
    if not args.enable_lora:
        return None
    if not getattr(model, "supports_lora", False) or cfg.num_experts:
        raise ValueError(f"enable_lora=True is not supported for {cfg.architecture} yet")
    from jaxllm.config import resolve_dtype_name
    from jaxllm.runner.lora_slots import LoRASlots

    dtype = cfg.dtype if args.lora_dtype == "auto" else resolve_dtype_name(args.lora_dtype, cfg.dtype)
    return LoRASlots(cfg, mesh, max_loras=args.max_loras, max_lora_rank=args.max_lora_rank,
                     max_cpu_loras=args.max_cpu_loras or args.max_loras, dtype=dtype, base_model_path=model_path)
