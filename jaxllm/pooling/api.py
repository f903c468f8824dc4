"""The pooling methods of ``LLM`` (vLLM's ``encode``, ``embed``, ``classify``, ``reward``, ``score``), as a
mixin so that ``llm.py`` only gains a branch in ``__init__``.

Every request is tokenized, truncated (``truncate_prompt_tokens``: keep the last k tokens) and validated with
its ``PoolingParams`` before any device work; a bad one raises naming it and no request of the call runs.
Decoders run on the paged engine (prefill-only requests); encoders on ``EncoderRunner``'s dense path.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from jaxllm.call_guard import serialized
from jaxllm.inputs import (
    as_prompt_list,
    check_tokenization_kwargs,
    name_the_prompt,
    split_cache_salt,
    tokenize_prompt,
)
from jaxllm.pooling.config import (
    PoolingModelInfo,
    architecture_of,
    check_convert,
    pooling_model_info,
    resolve_runner,
)
from jaxllm.pooling.outputs import (
    ClassificationRequestOutput,
    EmbeddingRequestOutput,
    PoolingRequestOutput,
)
from jaxllm.pooling.prompts import (
    collector_paused,
    is_text,
    left_truncation,
    lower_text,
    params_list,
    text_ids,
    truncation_size,
)
from jaxllm.pooling.scoring import ScoringMixin
from jaxllm.pooling.st_config import st_pooling_module
from jaxllm.pooling_params import PoolingParams


class PoolingMixin(ScoringMixin):
    """``LLM``'s pooling methods. ``runner_type`` is "generate" or "pooling"; ``pooling_info`` describes a
    pooling model (None for a generate model)."""

    runner_type = "generate"
    pooling_info: PoolingModelInfo | None = None

    # ---- construction ------------------------------------------------------------------------------------

    def _init_pooling(self, args) -> None:
        """Build the pooling model of ``args.model`` (``choose_runner`` said "pooling") and its runner."""
        import time

        import jax

        from jaxllm.load import model_hf_config
        from jaxllm.model_source import resolve_model_path
        from jaxllm.parallel.sharding import make_mesh
        from jaxllm.sampling_params import SamplingParams
        from jaxllm.tokenizer import load_tokenizer
        from jaxllm.weights.gguf import is_gguf

        if args.enable_lora:
            raise ValueError("enable_lora=True is not supported with runner='pooling' yet (LoRA adapters serve "
                             "generative models)")
        if args.speculative_config is not None:
            raise ValueError("speculative_config is not supported with runner='pooling' (pooling requests run their "
                             "prompt only: there are no decode steps to speculate)")
        if args.data_parallel_size > 1 or jax.process_count() > 1:
            raise ValueError(f"runner='pooling' with data_parallel_size={args.data_parallel_size} over "
                             f"{jax.process_count()} process(es) is not supported yet: a pooling model runs as one "
                             "replica in one process (data_parallel_size=1, no jax.distributed launcher)")
        t_load = time.perf_counter()
        path = resolve_model_path(args.model, args.revision, token=args.hf_token, cache_dir=args.download_dir)
        hf = model_hf_config(path, args)
        info, mesh = pooling_model_info(path, hf, args.pooler_config, args.convert), make_mesh(args.tensor_parallel_size)
        self.pooling_info, self.model_path = info, path
        self.tokenizer = None if args.skip_tokenizer_init else load_tokenizer(
            args.tokenizer or path, tokenizer_mode=args.tokenizer_mode, trust_remote_code=args.trust_remote_code,
            revision=args.tokenizer_revision or args.revision, token=args.hf_token, cache_dir=args.download_dir,
            code_revision=args.code_revision, gguf_source=args.tokenizer is None and is_gguf(path))
        self._request_counter = itertools.count()
        self._default_params = SamplingParams()  # get_default_sampling_params() still answers, as in vLLM
        platform = jax.devices()[0].platform
        if info.encoder:
            from jaxllm.pooling.encoder_runner import EncoderRunner

            self._encoder = EncoderRunner.load(path, hf, mesh, args, platform=platform)
            self.model_config, self.engine_args, self.llm_engine = self._encoder.config, self._encoder.args, None
        else:
            self.llm_engine = self._decoder_engine(path, hf, info, mesh, args, platform)
        self.load_seconds = time.perf_counter() - t_load

    def _decoder_engine(self, path: str, hf: dict, info: PoolingModelInfo, mesh, args, platform: str):
        """The paged engine over a ``PoolingModelRunner`` (compiles the bucket programs unless
        ``enforce_eager``)."""
        from jaxllm.engine import LLMEngine
        from jaxllm.engine_args import derived_max_model_len
        from jaxllm.load import kernel_fields
        from jaxllm.pooling.decoder import backbone_config, load_decoder
        from jaxllm.pooling.heads import load_dense_projector
        from jaxllm.pooling.runner import PoolingModelRunner
        from jaxllm.pooling.st_config import st_dense_modules

        cfg = dataclasses.replace(backbone_config(hf, args.dtype, args.quantization), **kernel_fields(args))
        args = args.resolve(platform, info.model_max_len(derived_max_model_len(cfg)), pooling=True)
        self.model_config, self.engine_args = cfg, args
        model, head = load_decoder(path, cfg, info, mesh, args.load_format, args.seed, self._classifier_ids(info))
        if head is None and info.projected_size is not None:  # an embedder's Dense modules
            head = load_dense_projector(path, st_dense_modules(path))
        runner = PoolingModelRunner(model, cfg, mesh, args, info=info, head=head)
        return LLMEngine(
            runner, num_blocks=runner.num_blocks, block_size=args.block_size, max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
            vocab_size=cfg.vocab_size, enable_prefix_caching=args.enable_prefix_caching, tokenizer=None,
            seed=args.seed, async_scheduling=args.async_scheduling, max_logprobs=args.max_logprobs,
            log_stats=not args.disable_log_stats, model_config=cfg, model_name=args.model_name,
            **runner.host_tier_kwargs(args))

    def _classifier_ids(self, info: PoolingModelInfo) -> list[int] | None:
        """The token ids of ``classifier_from_token`` (a classifier built from the LM head), or None."""
        if not info.classifier_from_token:
            return None
        if self.tokenizer is None:
            raise ValueError("classifier_from_token needs the tokenizer (skip_tokenizer_init=True)")
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in info.classifier_from_token]
        unknown = [t for t, i in zip(info.classifier_from_token, ids) if i is None or i == self.tokenizer.unk_token_id]
        if unknown:
            raise ValueError(f"classifier_from_token {unknown} are not tokens of the tokenizer")
        return ids

    @property
    def supported_tasks(self) -> tuple[str, ...]:
        return ("generate",) if self.pooling_info is None else self.pooling_info.tasks

    def _check_generate_runner(self, method: str) -> None:
        if self.runner_type != "generate":
            raise ValueError(f"LLM.{method}() is only supported for generative models. Try passing "
                             "`--runner generate` to use the model as a generative model.")

    # ---- vLLM API ------------------------------------------------------------------------------------------

    @serialized
    def encode(self, prompts: Any, pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
               truncate_prompt_tokens: int | None = None, use_tqdm: bool = True, lora_request: Any = None,
               pooling_task: str | None = None,
               tokenization_kwargs: dict[str, Any] | None = None) -> list[PoolingRequestOutput]:
        """Pool every prompt for ``pooling_task`` ("embed", "classify", "score", "token_embed",
        "token_classify"; "encode" = the model's token-level task); PoolingRequestOutputs in prompt order."""
        return self._encode(prompts, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                            use_tqdm=use_tqdm, lora_request=lora_request, pooling_task=pooling_task,
                            tokenization_kwargs=tokenization_kwargs)

    def _encode(self, prompts: Any, pooling_params: Any = None, *, truncate_prompt_tokens: int | None = None,
                use_tqdm: bool = True, lora_request: Any = None, pooling_task: str | None = None,
                tokenization_kwargs: dict[str, Any] | None = None) -> list[PoolingRequestOutput]:
        if self.runner_type != "pooling":
            raise ValueError("LLM.encode() is only supported for pooling models. Try passing `--runner pooling` "
                             "to use the model as a pooling model.")
        if pooling_task is None:
            raise ValueError("pooling_task required for `LLM.encode`: use LLM.embed / classify / score / reward, "
                             "or pass pooling_task='embed', 'classify', 'token_embed' or 'token_classify'")
        if pooling_task == "encode":
            pooling_task = "token_embed" if "token_embed" in self.supported_tasks else "token_classify"
        if pooling_task not in self.supported_tasks:
            if pooling_task in ("embed", "token_embed"):
                raise ValueError("Embedding API is not supported by this model. Try converting the model using "
                                 "`--convert embed`.")
            if pooling_task in ("classify", "token_classify"):
                raise ValueError("Classification API is not supported by this model. Try converting the model "
                                 "using `--convert classify`.")
            raise ValueError(f"Unsupported task: {pooling_task!r} Supported tasks: {self.supported_tasks}")
        _no_lora(lora_request)
        with collector_paused():
            split = [split_cache_salt(i, p) for i, p in enumerate(as_prompt_list(prompts))]
            salts, items = [salt for salt, _ in split], [p for _, p in split]  # a salt keys the prefix cache
            requests = self._pooling_requests(items, pooling_params, pooling_task, truncate_prompt_tokens,
                                              tokenization_kwargs)
            return self._run_pooling(requests, use_tqdm, salts)

    @serialized
    def embed(self, prompts: Any, *, truncate_prompt_tokens: int | None = None, use_tqdm: bool = True,
              pooling_params: PoolingParams | list[PoolingParams] | None = None, lora_request: Any = None,
              tokenization_kwargs: dict[str, Any] | None = None) -> list[EmbeddingRequestOutput]:
        """One embedding per prompt (``outputs.embedding``, a list of floats)."""
        with collector_paused():  # the conversions too (collector_paused says why)
            items = self._encode(prompts, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                                 use_tqdm=use_tqdm, lora_request=lora_request, pooling_task="embed",
                                 tokenization_kwargs=tokenization_kwargs)
            return [EmbeddingRequestOutput.from_base(item) for item in items]

    @serialized
    def classify(self, prompts: Any, *, pooling_params: PoolingParams | list[PoolingParams] | None = None,
                 use_tqdm: bool = True, lora_request: Any = None,
                 tokenization_kwargs: dict[str, Any] | None = None) -> list[ClassificationRequestOutput]:
        """Class probabilities per prompt (``outputs.probs``)."""
        with collector_paused():  # the conversions too (collector_paused says why)
            items = self._encode(prompts, pooling_params, use_tqdm=use_tqdm, lora_request=lora_request,
                                 pooling_task="classify", tokenization_kwargs=tokenization_kwargs)
            return [ClassificationRequestOutput.from_base(item) for item in items]

    @serialized
    def reward(self, prompts: Any, /, *, truncate_prompt_tokens: int | None = None, use_tqdm: bool = True,
               pooling_params: PoolingParams | list[PoolingParams] | None = None, lora_request: Any = None,
               tokenization_kwargs: dict[str, Any] | None = None) -> list[PoolingRequestOutput]:
        """Per-token rewards of a reward / classifier model (``outputs.data`` [T, L], "token_classify")."""
        return self._encode(prompts, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                            use_tqdm=use_tqdm, lora_request=lora_request, pooling_task="token_classify",
                            tokenization_kwargs=tokenization_kwargs)

    # ---- internals -----------------------------------------------------------------------------------------

    def _max_model_len(self) -> int:
        return self.engine_args.max_model_len

    def _pooling_requests(self, items: list, pooling_params, task: str, truncate_prompt_tokens: int | None,
                          tokenization_kwargs: dict | None) -> list[tuple[list[int], PoolingParams]]:
        """(truncated token ids, verified params) per prompt; raises before any device work."""
        params = params_list(pooling_params, len(items))
        texts = text_ids(self.tokenizer, items, params, truncate_prompt_tokens, tokenization_kwargs,
                         self._max_model_len(), self.pooling_info.do_lower_case)
        out = []
        for i, (item, p) in enumerate(zip(items, params)):
            if truncate_prompt_tokens is not None:
                p.truncate_prompt_tokens = truncate_prompt_tokens
            p.verify(task, self.pooling_info)
            k = truncation_size(self._max_model_len(), p.truncate_prompt_tokens)
            ids = texts.pop(i, None)
            out.append((self._tokenize(i, item, tokenization_kwargs, k) if ids is None else ids, p))
        return out

    def _tokenize(self, index: int, item: Any, tokenization_kwargs: dict | None, keep_last: int | None) -> list[int]:
        """Token ids of one prompt, keeping the last ``keep_last``. Text is truncated by the tokenizer from the
        left (vLLM's ``truncation_side="left"``), so the special tokens it adds (BERT's [CLS] ... [SEP], a
        BOS) stay and the result is at most ``keep_last`` long; token ids are cut as given."""
        kwargs = check_tokenization_kwargs(tokenization_kwargs)
        if self.pooling_info.do_lower_case and is_text(item):  # sentence-transformers' tokenizer option
            item = item.lower() if isinstance(item, str) else {**item, "prompt": lower_text(item.get("prompt"))}
        if keep_last is None or not is_text(item) or self.tokenizer is None:
            ids = tokenize_prompt(index, item, self.tokenizer, kwargs)[1]
            return ids if keep_last is None else ids[-keep_last:]
        with left_truncation(self.tokenizer):
            return tokenize_prompt(index, item, self.tokenizer, {**kwargs, "truncation": True,
                                                                 "max_length": keep_last})[1]

    def _run_pooling(self, requests: list[tuple[list[int], PoolingParams]], use_tqdm: bool,
                     salts: list[str | None] | None = None):
        """Run the requests (all or none are queued) and return their outputs in order. ``salts``: each
        prompt's ``cache_salt`` or None (the encoder-only path keeps no prefix cache to isolate)."""
        ids = [str(next(self._request_counter)) for _ in requests]
        if self.llm_engine is None:
            try:
                data = self._encoder.run(ids, requests, use_tqdm)
            except (ValueError, TypeError) as e:  # a validation error names the prompt's index, not our id
                raise name_the_prompt(e, ids) from None
            # the dense encoder path keeps no prefix cache: no cached tokens
            return [PoolingRequestOutput(rid, d, toks, 0, True) for rid, d, (toks, _) in zip(ids, data, requests)]
        engine = self.llm_engine
        added: list[str] = []
        try:
            for rid, (toks, p), salt in zip(ids, requests, salts or [None] * len(requests)):
                engine.add_request(rid, {"prompt_token_ids": toks, "cache_salt": salt} if salt else toks, p)
                added.append(rid)
        except Exception as e:
            engine.abort_request(added)
            if isinstance(e, (ValueError, TypeError)):
                raise name_the_prompt(e, ids) from None
            raise
        return self._run(added, use_tqdm)


def choose_runner(args) -> str:
    """"generate" or "pooling": ``args.runner``, or for "auto" the checkpoint's architecture (vLLM's suffix
    rules, ``config.resolve_runner``; a sentence-transformers Pooling module makes even a ``*ForCausalLM``
    checkpoint, as Qwen3-Embedding, a pooling model). A GGUF file (a causal LM) generates unless ``runner="pooling"``."""
    from jaxllm.load import model_hf_config
    from jaxllm.model_source import resolve_model_path
    from jaxllm.weights.gguf import is_gguf

    path = resolve_model_path(args.model, args.revision, token=args.hf_token, cache_dir=args.download_dir)
    if is_gguf(path):  # a causal LM: it pools only when asked to
        runner, arch = ("pooling" if args.runner == "pooling" else "generate"), "ForCausalLM"
    else:
        hf = model_hf_config(path, args)
        runner, arch = resolve_runner(args.runner, hf, has_st_pooling=st_pooling_module(path) is not None), \
            architecture_of(hf)
    check_convert(args.convert, runner, arch)
    if runner == "generate" and args.pooler_config is not None:
        raise ValueError(f"pooler_config={args.pooler_config!r} applies to pooling models; {args.model!r} runs "
                         "as a generative model (pass runner='pooling')")
    return runner


def _no_lora(lora_request: Any) -> None:
    if lora_request is not None:
        raise ValueError("lora_request is not supported with runner='pooling' yet (LoRA adapters serve "
                         "generative models)")
