"""The ``LLM`` class: vLLM's offline API (generate, chat, get_tokenizer) over the jaxllm engine."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Any

from jaxllm.beam_search import BeamSearchOutput, beam_search
from jaxllm.engine import LLMEngine
from jaxllm.engine_args import EngineArgs
from jaxllm.inputs import as_params_list, as_prompt_list, tokenize_prompt
from jaxllm.outputs import RequestOutput
from jaxllm.pooling.api import PoolingMixin, choose_runner
from jaxllm.sampling_params import BeamSearchParams, SamplingParams
from jaxllm.tokenizer import load_tokenizer

logger = logging.getLogger("jaxllm")

_GEN_CONFIG_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                    "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}


class LLM(PoolingMixin):
    """An offline LLM engine (vLLM's ``LLM``). ``model``: a HF checkpoint folder or hub id, a .gguf file, or the
    embedded default model's name. Every other keyword is an ``EngineArgs`` field (vLLM's names and defaults,
    validated before anything loads; docs/settings.md lists them, docs/vllm_compat.md maps vLLM's).

    ``runner="pooling"`` (or "auto" on a pooling architecture) makes a pooling model: ``embed``, ``classify``,
    ``score``, ``reward`` and ``encode`` (jaxllm.pooling) instead of ``generate``.

    ``enforce_eager=True`` skips the ahead-of-time compilation of the bucket ladder: each step program is
    compiled the first time a batch needs it (fast start-up, slow first steps).
    """

    def __init__(self, model: str, **kwargs: Any):
        t_start = time.perf_counter()
        args = EngineArgs.from_kwargs({"model": model, **kwargs})
        from jaxllm.runner.memory import request_memory_fraction

        request_memory_fraction(args.gpu_memory_utilization)
        enable_compilation_cache(args.cache_dir)
        import jax

        from jaxllm.load import build_model, locate_model
        from jaxllm.runner.model_runner import ModelRunner

        self.runner_type = choose_runner(args)
        if self.runner_type == "pooling":
            self._init_pooling(args)
            self.startup_seconds = time.perf_counter() - t_start
            return
        source = locate_model(args)
        cfg, path = source.config, source.path
        args = args.resolve(jax.devices()[0].platform, cfg.max_position_embeddings)
        self.model_config, self.engine_args, self.model_path = cfg, args, path
        self.tokenizer = None
        if not args.skip_tokenizer_init:
            self.tokenizer = load_tokenizer(args.tokenizer or path, tokenizer_mode=args.tokenizer_mode,
                                            trust_remote_code=args.trust_remote_code,
                                            revision=args.tokenizer_revision or args.revision,
                                            gguf_source=args.tokenizer is None and source.gguf,
                                            token=args.hf_token, cache_dir=args.download_dir,
                                            code_revision=args.code_revision)
        t_load = time.perf_counter()
        model_obj = build_model(args, source)
        self.load_seconds = time.perf_counter() - t_load
        runner_obj = ModelRunner(model_obj, cfg, source.mesh, args)
        del model_obj
        self.llm_engine = LLMEngine(
            runner_obj, num_blocks=runner_obj.num_blocks, block_size=args.block_size,
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=args.max_model_len, vocab_size=cfg.vocab_size,
            enable_prefix_caching=args.enable_prefix_caching, eos_token_ids=self._eos_token_ids(),
            tokenizer=self.tokenizer, seed=args.seed, async_scheduling=args.async_scheduling,
            max_logprobs=args.max_logprobs, log_stats=not args.disable_log_stats)
        self._request_counter = itertools.count()
        self._default_params = self._generation_config_defaults()
        self.startup_seconds = time.perf_counter() - t_start

    # ---- vLLM API --------------------------------------------------------------------------------------

    def get_tokenizer(self):
        return self.tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        return self._default_params.clone()

    def generate(self, prompts: Any, sampling_params: SamplingParams | list[SamplingParams] | None = None, *,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate completions for every prompt; returns RequestOutputs in the order of ``prompts``."""
        self._check_generate_runner("generate")
        items = as_prompt_list(prompts)
        params = as_params_list(sampling_params, len(items), self._default_params)
        requests = [tokenize_prompt(i, p, self.tokenizer) for i, p in enumerate(items)]
        ids = self._add_requests(requests, params)
        return self._run(ids, use_tqdm)

    def chat(self, messages: Any, sampling_params: SamplingParams | list[SamplingParams] | None = None, *,
             chat_template: str | None = None, add_generation_prompt: bool = True,
             continue_final_message: bool = False, chat_template_kwargs: dict[str, Any] | None = None,
             use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate replies to one conversation (a list of {"role", "content"} dicts) or a list of them."""
        self._check_generate_runner("chat")
        if self.tokenizer is None:
            raise ValueError("chat() needs a tokenizer, but LLM was built with skip_tokenizer_init=True")
        if not isinstance(messages, (list, tuple)) or not messages:
            raise TypeError("messages must be a non-empty list of {'role', 'content'} dicts or a list of them")
        conversations = [messages] if isinstance(messages[0], dict) else list(messages)
        if add_generation_prompt and continue_final_message:
            raise ValueError("continue_final_message and add_generation_prompt cannot both be True")
        prompts = []
        for i, conv in enumerate(conversations):
            if not isinstance(conv, (list, tuple)) or not all(isinstance(m, dict) for m in conv):
                raise TypeError(f"conversation {i} must be a list of {{'role', 'content'}} dicts")
            text = self.tokenizer.apply_chat_template(
                list(conv), tokenize=False, chat_template=chat_template, add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message, **(chat_template_kwargs or {}))
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            prompts.append({"prompt": text, "prompt_token_ids": ids})
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)

    def beam_search(self, prompts: Any, params: BeamSearchParams, lora_request: Any = None,
                    use_tqdm: Any = False, concurrency_limit: int | None = None) -> list[BeamSearchOutput]:
        """vLLM's beam search over the paged engine; one BeamSearchOutput per prompt (str, {"prompt": ...} or
        {"prompt_token_ids": [...]}), sequences best first. See ``jaxllm.beam_search``."""
        if lora_request is not None:
            raise ValueError("lora_request is not supported yet: jaxllm has no LoRA adapters")
        self._check_generate_runner("beam_search")
        return beam_search(self, prompts, params, use_tqdm=use_tqdm, concurrency_limit=concurrency_limit)

    # ---- internals -------------------------------------------------------------------------------------

    def _add_requests(self, requests: list[tuple[str | None, list[int]]], params: list[SamplingParams]) -> list[str]:
        """Queue all requests, or none: a bad one raises before any device work and leaves no request behind."""
        engine = self.llm_engine
        added: list[str] = []
        try:
            for index, ((text, token_ids), sp) in enumerate(zip(requests, params)):
                request_id = str(next(self._request_counter))
                try:
                    engine.add_request(request_id, token_ids, sp, prompt=text)
                except (ValueError, TypeError) as e:  # name the prompt's place in the batch, not our request id
                    message = str(e).removeprefix(f"request {request_id!r}: ")
                    raise type(e)(f"prompt {index}: {message}") from None
                added.append(request_id)
        except Exception:
            if added:
                engine.abort_request(added)
            raise
        return added

    def _run(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        engine = self.llm_engine
        done: dict[str, RequestOutput] = {}
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(request_ids), desc="Processed prompts", dynamic_ncols=True)
        t0, out_tokens = time.perf_counter(), 0
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
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

    def _eos_token_ids(self) -> list[int]:
        """Primary EOS first (the tokenizer's), then extra ids from generation_config/config."""
        ids: list[int] = []
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        gen = self._generation_config()
        extra = gen.get("eos_token_id")
        extra = extra if isinstance(extra, list) else ([extra] if extra is not None else [])
        ids += [int(t) for t in (*extra, *self.model_config.eos_token_ids)]
        return [t for t in dict.fromkeys(ids) if 0 <= t < self.model_config.vocab_size]

    def _generation_config(self) -> dict[str, Any]:
        """generation_config.json of the model ("auto") or of a folder, none ("vllm"), with
        ``override_generation_config`` on top (vLLM's generation_config / override_generation_config)."""
        where = self.engine_args.generation_config
        gen: dict[str, Any] = {}
        if where != "vllm":
            folder = self.model_path if where == "auto" else os.fspath(where)
            path = os.path.join(folder, "generation_config.json")
            if where != "auto" and not os.path.isfile(path):
                raise ValueError(f"generation_config={where!r}: no generation_config.json in that folder")
            if os.path.isfile(path):
                with open(path) as f:
                    gen = json.load(f)
        return {**gen, **(self.engine_args.override_generation_config or {})}

    def _generation_config_defaults(self) -> SamplingParams:
        """vLLM's default: SamplingParams() updated with the model's generation_config.json."""
        gen = self._generation_config()
        kwargs = {ours: gen[theirs] for theirs, ours in _GEN_CONFIG_KEYS.items() if gen.get(theirs) is not None}
        if gen.get("do_sample") is False:
            kwargs["temperature"] = 0.0
        return SamplingParams(**kwargs)


def enable_compilation_cache(where: str | None) -> None:
    """JAX's persistent compilation cache in ``where`` (``EngineArgs.cache_dir``; None disables it), unless the
    user configured one already."""
    import jax

    if where is None or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", where)
    # cache every program, also the small sampler ones (JAX's default skips compiles under 1 s)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
