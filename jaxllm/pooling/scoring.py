"""``LLM.score``: pair scores, as vLLM. A cross-encoder (a classifier with one label) scores each
``(text_1, text_2)`` pair tokenized together; an embedding model embeds both sides and returns their cosine
similarity. Pairs are 1-to-1, 1-to-N (the single ``text_1`` is paired with every ``text_2``) or N-to-N.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxllm.call_guard import serialized
from jaxllm.pooling.outputs import PoolingOutput, PoolingRequestOutput, ScoringRequestOutput
from jaxllm.pooling.prompts import left_truncation, truncation_size
from jaxllm.pooling_params import PoolingParams


class ScoringMixin:
    @serialized
    def score(self, data_1: Any, data_2: Any, /, *, truncate_prompt_tokens: int | None = None,
              use_tqdm: bool = True, pooling_params: Any = None, lora_request: Any = None,
              tokenization_kwargs: dict[str, Any] | None = None,
              chat_template: str | None = None) -> list[ScoringRequestOutput]:
        """Scores of the pairs; ``outputs.score`` is a float."""
        if chat_template is not None:
            raise ValueError("chat_template is not supported by score() yet: pairs are tokenized as a text pair "
                             "(or one text for an LLM reranker); format the texts before the call")
        if self.runner_type != "pooling":
            raise ValueError("LLM.score() is only supported for pooling models. Try passing `--runner pooling` to "
                             "use the model as a pooling model.")
        tasks = self.supported_tasks
        if "embed" not in tasks and "score" not in tasks:
            if self.pooling_info.num_labels:
                raise ValueError(f"Scoring API is only enabled for num_labels == 1 (this classifier has "
                                 f"{self.pooling_info.num_labels}).")
            raise ValueError("This model does not support the Scoring API.")
        texts_1, texts_2 = self._score_texts(data_1), self._score_texts(data_2)
        validate_score_input_lens(texts_1, texts_2)
        if self.pooling_info.is_cross_encoder:
            return self._cross_encoding_score(texts_1, texts_2, truncate_prompt_tokens, use_tqdm, pooling_params,
                                              lora_request, tokenization_kwargs)
        return self._embedding_score(texts_1, texts_2, truncate_prompt_tokens, use_tqdm, pooling_params,
                                     lora_request, tokenization_kwargs)

    def _score_texts(self, data: Any) -> list[str]:
        """str / TextPrompt / TokensPrompt (decoded: pairs are tokenized together) or a list of them."""
        items = [data] if isinstance(data, (str, dict)) else list(data)
        out = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and "prompt_token_ids" in item:
                if self.tokenizer is None:
                    raise ValueError("score() with token ids needs a tokenizer (skip_tokenizer_init=True)")
                item = self.tokenizer.decode(item["prompt_token_ids"])
            elif isinstance(item, dict) and "prompt" in item:
                item = item["prompt"]
            if not isinstance(item, str):
                raise TypeError(f"score() input {i} must be a str or a prompt dict, got {type(item).__name__}")
            out.append(item)
        return out

    def _embedding_score(self, texts_1, texts_2, truncate_prompt_tokens, use_tqdm, pooling_params, lora_request,
                         tokenization_kwargs) -> list[ScoringRequestOutput]:
        encoded = self._encode(texts_1 + texts_2, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                              use_tqdm=use_tqdm, lora_request=lora_request, pooling_task="embed",
                              tokenization_kwargs=tokenization_kwargs)
        out_1, out_2 = encoded[:len(texts_1)], encoded[len(texts_1):]
        if len(out_1) == 1:  # 1-to-N: the one query embedded once
            out_1 = out_1 * len(out_2)
        # a pair's prompt_token_ids: both prompts, joined by the pad token when the tokenizer has one (vLLM's)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        padding = [] if pad is None else [pad]
        scores = []
        for e1, e2 in zip(out_1, out_2):
            a, b = np.asarray(e1.outputs.data, np.float32), np.asarray(e2.outputs.data, np.float32)
            cos = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-8))
            base = PoolingRequestOutput(f"{e1.request_id}_{e2.request_id}", PoolingOutput(np.float32(cos)),
                                        e1.prompt_token_ids + padding + e2.prompt_token_ids,
                                        e1.num_cached_tokens + e2.num_cached_tokens, True)
            scores.append(ScoringRequestOutput.from_base(base))
        return scores

    def _cross_encoding_score(self, texts_1, texts_2, truncate_prompt_tokens, use_tqdm, pooling_params,
                              lora_request, tokenization_kwargs) -> list[ScoringRequestOutput]:
        """Each pair tokenized as ``tokenizer(text, text_pair)`` (truncated by the tokenizer from the left to k
        tokens when ``truncate_prompt_tokens`` is set, as vLLM), then the "score" task."""

        if self.tokenizer is None:
            raise ValueError("score() on a cross-encoder needs a tokenizer (skip_tokenizer_init=True)")
        if len(texts_1) == 1:
            texts_1 = texts_1 * len(texts_2)
        kwargs = dict(tokenization_kwargs or {})
        k = truncation_size(self._max_model_len(), truncate_prompt_tokens)
        if k is not None:
            kwargs.update(truncation=True, max_length=k)
        prompts, params = [], []
        for a, b in zip(texts_1, texts_2):
            with left_truncation(self.tokenizer):  # an LLM as reranker (no pad token) reads one text
                encoded = (self.tokenizer(text=a, text_pair=b, **kwargs) if self.pooling_info.use_pad_token
                           else self.tokenizer(text=a + b, **kwargs))
            prompts.append({"prompt_token_ids": encoded.input_ids})
            params.append(_with_token_types(pooling_params, encoded.get("token_type_ids")))
        items = self._encode(prompts, params, use_tqdm=use_tqdm, lora_request=lora_request, pooling_task="score")
        return [ScoringRequestOutput.from_base(item) for item in items]


def _with_token_types(pooling_params: Any, token_type_ids: list[int] | None):
    """A copy of ``pooling_params`` carrying the pair's segment boundary for models with token types (BERT):
    ``extra_kwargs["compressed_token_type_ids"]`` = the index of the first type-1 token (the types are 0s then
    1s), as vLLM passes it."""
    if pooling_params is not None and not isinstance(pooling_params, PoolingParams):
        raise TypeError(f"score() takes one PoolingParams for every pair, got {type(pooling_params).__name__}")
    p = PoolingParams() if pooling_params is None else pooling_params.clone()
    if token_type_ids:
        first = next((i for i, t in enumerate(token_type_ids) if t), len(token_type_ids))
        p.extra_kwargs = {**(p.extra_kwargs or {}), "compressed_token_type_ids": first}
    return p


def validate_score_input_lens(texts_1: list, texts_2: list) -> None:
    if len(texts_1) > 1 and len(texts_1) != len(texts_2):
        raise ValueError("Input lengths must be either 1:1, 1:N or N:N")
    if len(texts_1) == 0:
        raise ValueError("At least one text element must be given")
    if len(texts_2) == 0:
        raise ValueError("At least one text_pair element must be given")
