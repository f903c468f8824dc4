"""The ``LLM`` class: vLLM's offline API (generate, chat, get_tokenizer) over the jaxllm engine."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Any

from jaxllm.config import check_quantization
from jaxllm.engine import LLMEngine
from jaxllm.engine_args import EngineArgs
from jaxllm.inputs import as_params_list, as_prompt_list, tokenize_prompt
from jaxllm.model_source import hf_config_dict, model_config, resolve_model_path
from jaxllm.outputs import RequestOutput
from jaxllm.pooling.api import PoolingMixin
from jaxllm.pooling.config import resolve_runner
from jaxllm.sampling_params import SamplingParams
from jaxllm.tokenizer import load_tokenizer
from jaxllm.weights.gguf import is_gguf

logger = logging.getLogger("jaxllm")

RUNNERS = ("auto", "generate", "pooling")
_GEN_CONFIG_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                    "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}


class LLM(PoolingMixin):
    """An offline LLM engine (vLLM's ``LLM``). See the README for every argument.

    ``runner="pooling"`` (or "auto" on a pooling architecture) makes a pooling model: ``embed``, ``classify``,
    ``score``, ``reward`` and ``encode`` (jaxllm.pooling.api) instead of ``generate``.

    ``enforce_eager=True`` skips the ahead-of-time compilation of the bucket ladder: each step program is
    compiled the first time a batch needs it (fast start-up, slow first steps). ``swap_space`` exists for
    vLLM compatibility only: jaxllm preempts by recompute and never swaps, so it must stay 4 (the default) or 0.
    """

    def __init__(self, model: str, *, runner: str = "auto", tokenizer: str | None = None,
                 tokenizer_mode: str = "auto", skip_tokenizer_init: bool = False, trust_remote_code: bool = False,
                 tensor_parallel_size: int = 1, dtype: Any = "auto", quantization: str | None = None,
                 revision: str | None = None, seed: int = 0, gpu_memory_utilization: float = 0.9,
                 swap_space: float = 4, enforce_eager: bool = False, **kwargs: Any):
        t_start = time.perf_counter()
        args = EngineArgs.from_kwargs(kwargs)
        _check_llm_args(runner, quantization, tensor_parallel_size, gpu_memory_utilization, swap_space, seed)
        from jaxllm.runner.memory import request_memory_fraction

        request_memory_fraction(gpu_memory_utilization)
        _enable_compilation_cache()
        import jax

        from jaxllm.parallel.sharding import make_mesh
        from jaxllm.runner.model_runner import ModelRunner
        from jaxllm.weights.loader import build_dummy_model, load_weights

        mesh = make_mesh(tensor_parallel_size)
        path = resolve_model_path(model, revision)
        gguf = is_gguf(path)
        if args.load_format == "gguf" and not gguf:
            raise ValueError(f"load_format='gguf' but {model!r} is not a GGUF file")
        if args.load_format == "safetensors" and gguf:
            raise ValueError(f"load_format='safetensors' but {model!r} is a GGUF file")
        if runner == "pooling" and gguf:
            raise ValueError("runner='pooling' needs a safetensors checkpoint folder, not a GGUF file")
        self.runner_type = "generate" if gguf else resolve_runner(runner, hf_config_dict(path))
        if self.runner_type == "pooling":
            tok = None if skip_tokenizer_init else load_tokenizer(
                tokenizer or path, tokenizer_mode=tokenizer_mode, trust_remote_code=trust_remote_code,
                revision=revision)
            self._init_pooling(path, hf_config_dict(path), args, mesh, dtype=dtype, quantization=quantization,
                               seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                               enforce_eager=enforce_eager, tokenizer=tok)
            self.startup_seconds = time.perf_counter() - t_start
            return
        cfg = model_config(path, dtype, quantization)
        args = args.resolve(jax.devices()[0].platform, cfg.max_position_embeddings)
        self.model_config, self.engine_args, self.model_path = cfg, args, path
        self.tokenizer = None
        if not skip_tokenizer_init:
            tok_path = tokenizer or path
            self.tokenizer = load_tokenizer(tok_path, tokenizer_mode=tokenizer_mode,
                                            trust_remote_code=trust_remote_code, revision=revision,
                                            gguf_source=tokenizer is None and gguf)
        t_load = time.perf_counter()
        model_obj = build_dummy_model(cfg, mesh, seed) if args.load_format == "dummy" else load_weights(path, cfg, mesh)
        self.load_seconds = time.perf_counter() - t_load
        logger.info("weights ready in %.1f s (%s)", self.load_seconds, args.load_format)
        runner_obj = ModelRunner(model_obj, cfg, mesh, block_size=args.block_size, max_num_seqs=args.max_num_seqs,
                                 max_num_batched_tokens=args.max_num_batched_tokens,
                                 max_model_len=args.max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                                 num_gpu_blocks_override=args.num_gpu_blocks_override,
                                 kv_cache_memory_bytes=args.kv_cache_memory_bytes, enforce_eager=enforce_eager,
                                 kv_cache_dtype=args.kv_cache_dtype)
        del model_obj
        self.llm_engine = LLMEngine(
            runner_obj, num_blocks=runner_obj.num_blocks, block_size=args.block_size,
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=args.max_model_len, vocab_size=cfg.vocab_size,
            enable_prefix_caching=args.enable_prefix_caching, eos_token_ids=self._eos_token_ids(),
            tokenizer=self.tokenizer, seed=seed, async_scheduling=args.async_scheduling)
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
        path = os.path.join(self.model_path, "generation_config.json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        return {}

    def _generation_config_defaults(self) -> SamplingParams:
        """vLLM's default: SamplingParams() updated with the model's generation_config.json."""
        gen = self._generation_config()
        kwargs = {ours: gen[theirs] for theirs, ours in _GEN_CONFIG_KEYS.items() if gen.get(theirs) is not None}
        if gen.get("do_sample") is False:
            kwargs["temperature"] = 0.0
        return SamplingParams(**kwargs)


def _check_llm_args(runner, quantization, tensor_parallel_size, gpu_memory_utilization, swap_space, seed) -> None:
    if runner not in RUNNERS:
        raise ValueError(f"runner={runner!r} is not supported; choose one of {RUNNERS}")
    check_quantization(quantization)
    if isinstance(tensor_parallel_size, bool) or not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be a positive int, got {tensor_parallel_size!r}")
    if not isinstance(gpu_memory_utilization, (int, float)) or not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    if swap_space not in (0, 4):
        raise ValueError(f"swap_space={swap_space!r}: jaxllm preempts by recompute and never swaps to CPU memory; "
                         "leave swap_space at its default (4) or pass 0")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")


def _enable_compilation_cache() -> None:
    """JAX's persistent compilation cache in a user cache dir (JAXLLM_CACHE_DIR; "0" disables it), unless the
    user configured one already."""
    import jax

    where = os.environ.get("JAXLLM_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "jaxllm", "xla"))
    if where == "0" or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", where)
    # cache every program, also the small sampler ones (JAX's default skips compiles under 1 s)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
