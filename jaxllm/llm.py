"""The ``LLM`` class: vLLM's offline API (generate, chat, get_tokenizer) over the jaxllm engine."""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from jaxllm import chat_utils
from jaxllm.beam_search import BeamSearchOutput, beam_search
from jaxllm.call_guard import CallGuard, serialized
from jaxllm.engine import LLMEngine
from jaxllm.engine.data_parallel import DataParallelEngine, RemoteReplica
from jaxllm.engine_args import EngineArgs, derived_max_model_len
from jaxllm.generation_config import default_sampling_params, eos_token_ids, read_generation_config
from jaxllm.inputs import (
    TokensPrompt,
    as_params_list,
    as_prompt_list,
    check_tokenization_kwargs,
    priority_list,
    split_cache_salt,
    tokenize_prompt,
)
from jaxllm.llm_control import EngineControl
from jaxllm.lora import lora_request_list
from jaxllm.outputs import RequestOutput
from jaxllm.pooling.api import PoolingMixin, choose_runner
from jaxllm.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams

logger = logging.getLogger("jaxllm")

class LLM(EngineControl, PoolingMixin):
    """An offline LLM engine (vLLM's ``LLM``). ``model``: a HF checkpoint folder or hub id, a .gguf file, an
    Orbax checkpoint written by ``jaxllm convert``, the embedded default model's name, or an in-memory jaxllm
    model module (with ``tokenizer=``; docs/jax_native.md). Every other keyword is an ``EngineArgs`` field (vLLM's names and defaults,
    validated before anything loads; docs/settings.md lists them, docs/vllm_compat.md maps vLLM's).

    ``runner="pooling"`` (or "auto" on a pooling architecture) makes a pooling model: ``embed``, ``classify``,
    ``score``, ``reward`` and ``encode`` (jaxllm.pooling) instead of ``generate``.

    ``enforce_eager=True`` skips the ahead-of-time compilation of the bucket ladder: each step program is
    compiled the first time a batch needs it (fast start-up, slow first steps).
    """

    def __init__(self, model: str, **kwargs: Any):
        t_start = time.perf_counter()
        self._call_guard = CallGuard()  # one call at a time (jaxllm.call_guard)
        args = EngineArgs.from_kwargs({"model": model, **kwargs})
        if args.distributed_executor_backend == "external_launcher":
            from jaxllm.parallel.multihost import initialize_distributed

            initialize_distributed()
        from jaxllm.runner.memory import request_memory_fraction

        request_memory_fraction(args.gpu_memory_utilization)
        enable_compilation_cache(args.cache_dir)
        import jax

        from jaxllm.flax_import import import_flax_nnx

        import_flax_nnx()  # before the modules below import it

        from jaxllm.in_memory import is_in_memory_model
        from jaxllm.load import (
            build_model,
            grammar_capable_before_loading,
            load_tokenizer_for,
            locate_in_memory_model,
            locate_model,
            replica_models,
        )
        from jaxllm.parallel.multihost import allgather_objects
        from jaxllm.runner.model_runner import ModelRunner
        from jaxllm.structured_outputs.grammar import grammar_capable

        in_memory = is_in_memory_model(model)
        self.runner_type = "generate" if in_memory else choose_runner(args)
        if self.runner_type == "pooling":
            self._init_pooling(args)
            self.startup_seconds = time.perf_counter() - t_start
            return
        source, model_obj = locate_in_memory_model(args) if in_memory else (locate_model(args), None)
        cfg, path = source.config, source.path
        args = args.resolve(jax.devices()[0].platform, derived_max_model_len(cfg),
                            num_processes=jax.process_count())  # before any weight reaches a device
        if jax.devices()[0].platform == "cpu" and cfg.dtype != "float32":
            logger.warning("dtype %s on the CPU: XLA's CPU matmuls in %s are an order of magnitude slower than in "
                           "float32 (SmolLM2-135M's decode step: 13x); pass dtype='float32' for speed", cfg.dtype,
                           cfg.dtype)
        self.model_config, self.engine_args, self.model_path = cfg, args, path
        # the tokenizer (transformers' import, a GGUF's vocabulary) loads on a thread while the weights load, and
        # a GGUF file's own (always a fast one) also while the programs compile: whether constrained requests can
        # run is known without it. Any other's errors surface before anything is compiled.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxllm-tokenizer") as pool:
            tokenizer = pool.submit(load_tokenizer_for, args, source)
            t_load = time.perf_counter()
            model_obj = model_obj or build_model(args, source)
            self.load_seconds = time.perf_counter() - t_load
            constrained = grammar_capable_before_loading(args, source)
            if constrained is None:
                self.tokenizer = tokenizer.result()
                constrained = grammar_capable(self.tokenizer)  # compile the grammar-bitmask sampler at start-up too
            lora_slots = _lora_slots(args, cfg, source.mesh, path, model_obj)  # before the KV cache is sized
            runners = [None if replica is None else ModelRunner(replica, cfg, mesh, args, lora=lora_slots,
                                                                structured_outputs=constrained)
                       for replica, mesh in replica_models(model_obj, args, source)]  # None: another process's
            self.tokenizer = tokenizer.result()
        del model_obj
        local = [r for r in runners if r is not None]
        for runner_obj in local if not in_memory else ():  # wake_up after sleep(level=2) reads the checkpoint
            runner_obj.weights_source = functools.partial(build_model, args, source.on_mesh(runner_obj.mesh))
        gen = read_generation_config(args, path)
        engines = [LLMEngine(
            runner_obj or RemoteReplica(rank), num_blocks=(runner_obj or local[0]).num_blocks,
            block_size=args.block_size,
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=args.max_model_len, vocab_size=cfg.vocab_size,
            enable_prefix_caching=args.enable_prefix_caching, eos_token_ids=eos_token_ids(self.tokenizer, gen, cfg),
            tokenizer=self.tokenizer, seed=args.seed, async_scheduling=args.async_scheduling,
            max_logprobs=args.max_logprobs, log_stats=not args.disable_log_stats,
            scheduling_policy=args.scheduling_policy, model_config=cfg, model_name=args.model_name,
            **(runner_obj or local[0]).host_tier_kwargs(args),  # a remote replica: the same model and args
            structured_outputs_config=args.structured_outputs_config,
            max_loras=args.max_loras if args.enable_lora else None,
            speculative_config=args.speculative_config)
            for rank, runner_obj in enumerate(runners)]
        self.llm_engine = engines[0] if len(engines) == 1 else DataParallelEngine(
            engines, exchange=allgather_objects if jax.process_count() > 1 else None)
        self._request_counter = itertools.count()
        self._default_params = default_sampling_params(gen)
        self.startup_seconds = time.perf_counter() - t_start

    # ---- vLLM API --------------------------------------------------------------------------------------

    def get_tokenizer(self):
        return self.tokenizer

    @serialized
    def set_tokenizer(self, tokenizer) -> None:
        """Replace the tokenizer (vLLM's method): prompts, chat templates and output text use it from now on."""
        self.llm_engine.set_tokenizer(tokenizer)
        self.tokenizer = tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        return self._default_params.clone()

    @serialized
    def generate(self, prompts: Any, sampling_params: SamplingParams | list[SamplingParams] | None = None, *,
                 use_tqdm: bool | Callable[..., Any] = True, lora_request: Any = None,
                 priority: list[int] | None = None,
                 tokenization_kwargs: dict[str, Any] | None = None) -> list[RequestOutput]:
        """Generate completions for every prompt; returns RequestOutputs in the order of ``prompts``.

        ``use_tqdm``: a progress bar (True), none (False), or a callable used in place of tqdm's class to
        build it (vLLM's contract: called with ``total``, ``desc``, ``dynamic_ncols`` and ``postfix``).
        ``priority``: one int per prompt, lower runs first; needs ``scheduling_policy="priority"``.
        ``tokenization_kwargs``: keyword arguments of the tokenizer's call for text prompts (e.g.
        ``truncation=True, max_length=k`` or ``add_special_tokens=False``). ``lora_request``: a LoRA adapter
        (jaxllm.lora.LoRARequest, with ``enable_lora=True``) for every prompt, or a list with one (or None) per
        prompt.
        """
        self._check_generate_runner("generate")
        return self._generate(prompts, sampling_params, use_tqdm, lora_request, priority, tokenization_kwargs)

    def _generate(self, prompts, sampling_params, use_tqdm, lora_request=None, priority=None,
                  tokenization_kwargs=None) -> list[RequestOutput]:
        self._check_awake()
        items = as_prompt_list(prompts)
        params = as_params_list(sampling_params, len(items), self._default_params)
        priorities = priority_list(priority, len(items))
        loras = lora_request_list(lora_request, len(items))
        kwargs = check_tokenization_kwargs(tokenization_kwargs)
        split = [split_cache_salt(i, p) for i, p in enumerate(items)]  # a prompt's cache_salt keys the prefix cache
        requests = [tokenize_prompt(i, p, self.tokenizer, kwargs) for i, (_, p) in enumerate(split)]
        ids = self._add_requests(requests, params, priorities, loras, [salt for salt, _ in split])
        return self._run(ids, use_tqdm)

    @serialized
    def chat(self, messages: Any, sampling_params: SamplingParams | list[SamplingParams] | None = None,
             use_tqdm: bool | Callable[..., Any] = True, lora_request: Any = None, chat_template: str | None = None,
             chat_template_content_format: str = "auto", add_generation_prompt: bool = True,
             continue_final_message: bool = False, tools: list[dict[str, Any]] | None = None,
             chat_template_kwargs: dict[str, Any] | None = None,
             tokenization_kwargs: dict[str, Any] | None = None,
             mm_processor_kwargs: dict[str, Any] | None = None) -> list[RequestOutput]:
        """Generate replies to one conversation (a list of {"role", "content"} dicts) or a list of them.

        Content is a str or a list of OpenAI-style text parts; ``chat_template_content_format`` says how the
        template receives it ("auto" reads the template; see ``jaxllm.chat_template``). ``tools`` (OpenAI tool
        schemas) are passed to the template; ``chat_template_kwargs`` (e.g. ``enable_thinking``, ``documents``)
        too, its keys winning over the named arguments. The rendered text is tokenized without special tokens
        (``tokenization_kwargs`` may change that). Media parts and ``mm_processor_kwargs`` are a ValueError
        (text-only models)."""
        self._check_generate_runner("chat")
        prompts = chat_utils.chat_prompts(
            self.tokenizer, messages, chat_template=chat_template,
            chat_template_content_format=chat_template_content_format,
            add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message, tools=tools,
            chat_template_kwargs=chat_template_kwargs, tokenization_kwargs=tokenization_kwargs,
            mm_processor_kwargs=mm_processor_kwargs)
        return self._generate(prompts, sampling_params, use_tqdm, lora_request)

    def preprocess_chat(self, messages: Any, lora_request: Any = None, chat_template: str | None = None,
                        chat_template_content_format: str = "auto", add_generation_prompt: bool = True,
                        continue_final_message: bool = False, tools: list[dict[str, Any]] | None = None,
                        chat_template_kwargs: dict[str, Any] | None = None,
                        mm_processor_kwargs: dict[str, Any] | None = None) -> list[TokensPrompt]:
        """``chat``'s prompts without generating: one TokensPrompt per conversation (its ``prompt_token_ids``,
        and the rendered ``prompt`` text), for ``generate`` or the pooling calls. ``lora_request`` is checked
        only: adapters share the base model's tokenizer."""
        lora_request_list(lora_request, 1)
        return chat_utils.chat_prompts(
            self.tokenizer, messages, chat_template=chat_template,
            chat_template_content_format=chat_template_content_format,
            add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message, tools=tools,
            chat_template_kwargs=chat_template_kwargs, mm_processor_kwargs=mm_processor_kwargs)

    @serialized
    def beam_search(self, prompts: Any, params: BeamSearchParams, lora_request: Any = None,
                    use_tqdm: Any = False, concurrency_limit: int | None = None) -> list[BeamSearchOutput]:
        """vLLM's beam search over the paged engine; one BeamSearchOutput per prompt (str, {"prompt": ...} or
        {"prompt_token_ids": [...]}), sequences best first. See ``jaxllm.beam_search``."""
        self._check_generate_runner("beam_search")
        return beam_search(self, prompts, params, lora_request=lora_request, use_tqdm=use_tqdm,
                           concurrency_limit=concurrency_limit)

    # ---- internals -------------------------------------------------------------------------------------

    def _add_requests(self, requests: list[tuple[str | None, list[int]]], params: list[SamplingParams],
                      priorities: list[int], loras: list[Any] | None = None,
                      salts: Sequence[str | None] | None = None) -> list[str]:
        """Queue all requests, or none: a bad one raises before any device work and leaves no request behind.
        Offline generation returns final outputs only, so every request runs as FINAL_ONLY (as in vLLM).
        ``salts``: each prompt's ``cache_salt`` (or None)."""
        engine = self.llm_engine
        added: list[str] = []
        loras = loras or [None] * len(requests)
        salts = salts or [None] * len(requests)
        try:
            for index, ((text, token_ids), sp, prio, lora, salt) in enumerate(
                    zip(requests, params, priorities, loras, salts)):
                request_id = str(next(self._request_counter))
                sp.output_kind = RequestOutputKind.FINAL_ONLY
                prompt = {"prompt_token_ids": token_ids} if text is None else \
                    {"prompt_token_ids": token_ids, "prompt": text}
                if salt:
                    prompt["cache_salt"] = salt
                try:
                    engine.add_request(request_id, prompt, sp, priority=prio, lora_request=lora)
                except (ValueError, TypeError) as e:  # name the prompt's place in the batch, not our request id
                    message = str(e).removeprefix(f"request {request_id!r}: ")
                    raise type(e)(f"prompt {index}: {message}") from None
                added.append(request_id)
        except Exception:
            if added:
                engine.abort_request(added)
            raise
        return added

    def _run(self, request_ids: list[str], use_tqdm: bool | Callable[..., Any]) -> list[RequestOutput]:
        engine = self.llm_engine
        done: dict[str, RequestOutput] = {}
        bar = None
        if use_tqdm:
            if callable(use_tqdm):
                make_bar = use_tqdm
            else:
                from tqdm.auto import tqdm as make_bar
            bar = make_bar(total=len(request_ids), desc="Processed prompts", dynamic_ncols=True,
                           postfix="output: 0 tok/s")
        t0, out_tokens = time.perf_counter(), 0
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if not out.finished:  # a streaming request added through llm_engine directly
                        continue
                    done[out.request_id] = out
                    if isinstance(out.outputs, list):  # pooling outputs generate no tokens
                        out_tokens += sum(len(c.token_ids) for c in out.outputs)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(f"output: {out_tokens / (time.perf_counter() - t0):.0f} tok/s")
        except BaseException:
            engine.abort_request([r for r in request_ids if r not in done])
            raise
        finally:
            if bar is not None:
                bar.close()
        return [done[r] for r in request_ids]


def _lora_slots(args: EngineArgs, cfg, mesh, model_path: str, model):
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


def enable_compilation_cache(where: str | None) -> None:
    """JAX's persistent compilation cache in ``where`` (``EngineArgs.cache_dir``; None disables it), unless the
    user configured one already."""
    import jax

    if where is None or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", where)
    # cache every program, also the small sampler ones (JAX's default skips compiles under 1 s)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
