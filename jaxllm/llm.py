"""The ``LLM`` class: vLLM's offline API (generate, chat, get_tokenizer) over the jaxllm engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from jaxllm import chat_utils
from jaxllm.beam_search import BeamSearchOutput, beam_search
from jaxllm.call_guard import CallGuard, serialized
from jaxllm.engine_args import EngineArgs
from jaxllm.in_memory import is_in_memory_model
from jaxllm.inputs import (
    TokensPrompt,
    as_params_list,
    as_prompt_list,
    check_tokenization_kwargs,
    is_embeds_prompt,
    priority_list,
    split_cache_salt,
    tokenize_prompt,
)
from jaxllm.llm_control import EngineControl
from jaxllm.llm_startup import GenerateStartup, prepare_process
from jaxllm.lora import lora_request_list
from jaxllm.outputs import RequestOutput
from jaxllm.pooling.api import PoolingMixin, choose_runner
from jaxllm.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams


class LLM(GenerateStartup, EngineControl, PoolingMixin):
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
        args = EngineArgs.from_kwargs({"model": model, **kwargs})  # every keyword validated before anything loads
        prepare_process(args)
        in_memory = is_in_memory_model(model)
        self.runner_type = "generate" if in_memory else choose_runner(args)
        if self.runner_type == "pooling":
            self._init_pooling(args)  # jaxllm.pooling.api
        else:
            self._init_generate(args, in_memory)  # jaxllm.llm_startup
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
        requests = [(None, p) if is_embeds_prompt(p) else tokenize_prompt(i, p, self.tokenizer, kwargs)
                    for i, (_, p) in enumerate(split)]  # an EmbedsPrompt goes to the engine as it is
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
                if isinstance(token_ids, dict):  # an EmbedsPrompt (the engine checks it)
                    prompt = dict(token_ids)
                else:
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

