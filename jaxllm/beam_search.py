"""Beam search on the paged engine (vLLM's ``LLM.beam_search``, its objects and its scoring).

    from jaxllm import LLM
    from jaxllm.sampling_params import BeamSearchParams
    out = llm.beam_search([{"prompt": "Hello"}], BeamSearchParams(beam_width=4, max_tokens=16))
    best = out[0].sequences[0]          # tokens (prompt included), text, cum_logprob, finish_reason

The algorithm is vLLM's. Every step sends each live beam to the engine as a one-token request
(``SamplingParams(max_tokens=1, logprobs=2 * beam_width, temperature=...)``) and expands it with the
returned logprob dict: its top ``2 * beam_width`` tokens (plus the sampled token when temperature > 0).
A candidate ending in the primary EOS joins the prompt's finished beams (``finish_reason="stop"``,
``stop_reason`` = the EOS id) unless ``ignore_eos``; of the others the ``beam_width`` best by
``get_beam_search_score`` live on. After ``max_tokens`` steps (or once no beam is left) the finished and
the live beams (``finish_reason="length"``) are sorted by score and the best ``beam_width`` returned.

How beams share KV blocks instead of copying them: a step request's prompt is the beam's whole token list,
and the engine's prefix cache finds every full block of it already computed. The blocks' hashes chain the
token ids of all blocks before them, so the prompt's blocks, and the blocks of a prefix that sibling beams
have in common, map to the same physical blocks: each step admits them with a ref count of one per beam
that holds them and computes only each beam's last, partial block and its newest token (at most
``block_size`` tokens per beam). Finished step requests leave their blocks cached in the free queue, where
the next step takes them back (only memory pressure evicts them, which costs recomputation, never
correctness). Without ``enable_prefix_caching`` every step recomputes every beam in full.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import TYPE_CHECKING, Any

from jaxllm.engine.request_checks import check_params, check_prompt
from jaxllm.inputs import as_prompt_list, tokenize_prompt
from jaxllm.lora.request import lora_request_list
from jaxllm.outputs import Logprob, RequestOutput
from jaxllm.sampling_params import BeamSearchParams, SamplingParams

if TYPE_CHECKING:
    from jaxllm.engine import LLMEngine

logger = logging.getLogger("jaxllm")

_request_ids = itertools.count()  # step requests are named "beam-<n>"
_CHECK_PREFIX = "request 'beam': "  # how the engine's request checks begin their messages


@dataclasses.dataclass
class BeamSearchSequence:
    """One beam: ``tokens`` (the prompt included, and the final EOS of a beam that ended on it),
    ``logprobs`` (one ``{token_id: Logprob}`` dict per generated token: the step's candidates),
    ``cum_logprob`` (sum of the generated tokens' logprobs) and ``text`` (the decoded ``tokens`` with
    special tokens skipped; None until returned, and without a tokenizer)."""

    tokens: list[int]
    logprobs: list[dict[int, Logprob]]
    cum_logprob: float = 0.0
    text: str | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: Any = None  # the LoRA adapter the beam ran with (vLLM's field; keyword here), or None


@dataclasses.dataclass
class BeamSearchOutput:
    """The ``beam_width`` best sequences of one prompt, best score first."""

    sequences: list[BeamSearchSequence]


class BeamSearchInstance:
    """The search state of one prompt: ``beams`` alive, ``completed`` ended (by EOS or max_model_len)."""

    def __init__(self, prompt_token_ids: list[int], lora_request: Any = None) -> None:
        self.num_prompt_tokens = len(prompt_token_ids)
        self.lora_request = lora_request  # the prompt's LoRA adapter (jaxllm.lora.LoRARequest) or None
        self.beams: list[BeamSearchSequence] = [BeamSearchSequence(list(prompt_token_ids), [],
                                                                      lora_request=lora_request)]
        self.completed: list[BeamSearchSequence] = []


def get_beam_search_score(tokens: list[int], cumulative_logprob: float, eos_token_id: int | None,
                          length_penalty: float = 1.0) -> float:
    """vLLM's score: ``cum_logprob / seq_len ** length_penalty``, where ``seq_len`` counts the prompt and the
    generated tokens but not a final EOS (transformers' ``_beam_search`` counts the generated tokens only, so
    the two rank finished beams of different lengths differently unless ``length_penalty`` is 0)."""
    seq_len = len(tokens)
    if eos_token_id is not None and tokens[-1] == eos_token_id:
        seq_len -= 1
    return cumulative_logprob / (seq_len**length_penalty)


def create_sort_beams_key_function(eos_token_id: int | None, length_penalty: float):
    def sort_beams_key(beam: BeamSearchSequence) -> float:
        return get_beam_search_score(beam.tokens, beam.cum_logprob, eos_token_id, length_penalty)

    return sort_beams_key


def beam_search(llm: Any, prompts: Any, params: BeamSearchParams, *, lora_request: Any = None,
                use_tqdm: Any = False, concurrency_limit: int | None = None) -> list[BeamSearchOutput]:
    """``LLM.beam_search``: one BeamSearchOutput per prompt, in order. Prompts are processed
    ``concurrency_limit`` at a time (all at once when None); every input is checked before device work.
    ``lora_request``: one LoRA adapter for every prompt or a list with one (or None) per prompt."""
    engine: LLMEngine = llm.llm_engine
    instances = _prepare(llm, prompts, params, concurrency_limit, lora_request)
    eos = engine.eos_token_ids[0] if engine.eos_token_ids else None
    key = create_sort_beams_key_function(eos, params.length_penalty)
    step_params = SamplingParams(max_tokens=1, logprobs=2 * params.beam_width, temperature=params.temperature,
                                 detokenize=False)
    chunk = concurrency_limit or max(len(instances), 1)
    groups = [instances[i : i + chunk] for i in range(0, len(instances), chunk)]
    bar = _progress_bar(use_tqdm, params.max_tokens * len(groups))
    try:
        for group in groups:
            steps = 0
            while steps < params.max_tokens and _step(engine, group, step_params, params, eos, key):
                steps += 1
                if bar is not None:
                    bar.update(1)
            if bar is not None:  # a group whose beams all ended early skips its remaining steps
                bar.update(params.max_tokens - steps)
    finally:
        if bar is not None:
            bar.close()
    return [_finish(inst, params, eos, key, llm.tokenizer) for inst in instances]


def _prepare(llm: Any, prompts: Any, params: BeamSearchParams, concurrency_limit: Any,
             lora_request: Any = None) -> list[BeamSearchInstance]:
    """Validate everything and tokenize the prompts (ValueError/TypeError before any device work)."""
    if not isinstance(params, BeamSearchParams):
        raise TypeError(f"params must be a BeamSearchParams, got {type(params).__name__}")
    if concurrency_limit is not None and (isinstance(concurrency_limit, bool) or not isinstance(
            concurrency_limit, int) or concurrency_limit < 1):
        raise ValueError(f"concurrency_limit must be None or a positive int, got {concurrency_limit!r}")
    engine = llm.llm_engine
    cap = llm.engine_args.max_logprobs  # -1: the vocabulary size
    cap = engine.vocab_size if cap == -1 else cap
    max_width = cap // 2
    if params.beam_width > max_width:
        raise ValueError(f"beam_width={params.beam_width} is not supported: each step asks the engine for "
                         f"2 * beam_width logprobs and the LLM's max_logprobs allows {cap}; use beam_width <= "
                         f"{max_width} or a larger max_logprobs")
    if not engine.block_manager.enable_prefix_caching:
        logger.warning("beam_search without enable_prefix_caching recomputes every beam in full at every step")
    instances = []
    prompts = as_prompt_list(prompts)
    loras = lora_request_list(lora_request, len(prompts))
    for lora in dict.fromkeys(x for x in loras if x is not None):
        engine.check_lora_request(lora)
    for i, prompt in enumerate(prompts):
        _, ids = tokenize_prompt(i, prompt, llm.tokenizer)
        try:
            ids = check_prompt("beam", ids, engine.vocab_size, engine.max_model_len)
            check_params("beam", SamplingParams(max_tokens=params.max_tokens), len(ids), tokenizer=None,
                         vocab_size=engine.vocab_size, max_model_len=engine.max_model_len,
                         block_manager=engine.block_manager)
        except (ValueError, TypeError) as e:  # name the prompt's place in the batch, not the check's label
            raise type(e)(f"prompt {i}: {str(e).removeprefix(_CHECK_PREFIX)}") from None
        instances.append(BeamSearchInstance(ids, loras[i]))
    return instances


def _step(engine: LLMEngine, group: list[BeamSearchInstance], step_params: SamplingParams,
          params: BeamSearchParams, eos: int | None, key) -> bool:
    """Extend every live beam of ``group`` by one token; False when no beam was left to extend."""
    for inst in group:  # a beam at max_model_len cannot take another token: it ends by length
        full = [b for b in inst.beams if len(b.tokens) >= engine.max_model_len]
        inst.completed += [dataclasses.replace(b, finish_reason="length") for b in full]
        inst.beams = [b for b in inst.beams if len(b.tokens) < engine.max_model_len]
    beams = [b for inst in group for b in inst.beams]
    if not beams:
        return False
    loras = [inst.lora_request for inst in group for _ in inst.beams]
    outputs = iter(_run_one_token_requests(engine, [b.tokens for b in beams], step_params, loras))
    for inst in group:
        candidates = []
        for beam in inst.beams:
            out = next(outputs).outputs[0]
            if out.finish_reason == "error":  # the sampler found no valid token (NaN logits): the beam ends
                inst.completed.append(dataclasses.replace(beam, finish_reason="error"))
                continue
            logprobs = out.logprobs[0]
            for token_id, lp in logprobs.items():
                new = BeamSearchSequence(beam.tokens + [token_id], beam.logprobs + [logprobs],
                                         beam.cum_logprob + lp.logprob, lora_request=beam.lora_request)
                if token_id == eos and not params.ignore_eos:
                    new.finish_reason, new.stop_reason = "stop", eos
                    inst.completed.append(new)
                else:
                    candidates.append(new)
        inst.beams = sorted(candidates, key=key, reverse=True)[: params.beam_width]
    return True


def _run_one_token_requests(engine: LLMEngine, token_lists: list[list[int]], step_params: SamplingParams,
                            loras: list[Any]) -> list[RequestOutput]:
    """Run one request per token list through the engine and return their outputs in order; on an error
    the requests still queued are aborted, so the engine stays usable."""
    ids: list[str] = []
    done: dict[str, RequestOutput] = {}
    try:
        for tokens, lora in zip(token_lists, loras):
            request_id = f"beam-{next(_request_ids)}"
            engine.add_request(request_id, tokens, step_params, lora_request=lora)
            ids.append(request_id)
        while any(r not in done for r in ids):
            for out in engine.step():
                if out.finished:  # step() may also report the progress of unfinished requests
                    done[out.request_id] = out
    except BaseException:
        engine.abort_request([r for r in ids if r not in done])
        raise
    return [done[r] for r in ids]


def _finish(inst: BeamSearchInstance, params: BeamSearchParams, eos: int | None, key,
            tokenizer: Any) -> BeamSearchOutput:
    """The best ``beam_width`` of the finished and live beams, with their text."""
    for beam in inst.beams:
        beam.finish_reason = "length"
    best = sorted(inst.completed + inst.beams, key=key, reverse=True)[: params.beam_width]
    if tokenizer is not None:
        for beam in best:
            drop_eos = beam.finish_reason == "stop" and not params.include_stop_str_in_output
            beam.text = tokenizer.decode(beam.tokens[:-1] if drop_eos else beam.tokens, skip_special_tokens=True)
        _decode_logprob_tokens(best, tokenizer)
    return BeamSearchOutput(sequences=best)


def _decode_logprob_tokens(beams: list[BeamSearchSequence], tokenizer: Any) -> None:
    """Fill ``Logprob.decoded_token`` of the returned beams (as vLLM's beam search, whose steps detokenize). The
    steps run with ``detokenize=False``, so only the returned beams' tokens are decoded, once each."""
    texts: dict[int, str] = {}
    for beam in beams:
        for position in beam.logprobs:
            for token_id, lp in position.items():
                if lp.decoded_token is None:
                    if token_id not in texts:
                        texts[token_id] = tokenizer.decode([token_id])
                    lp.decoded_token = texts[token_id]


def _progress_bar(use_tqdm: Any, total: int):
    """None, a tqdm bar, or the bar made by ``use_tqdm`` when it is a callable (vLLM's contract)."""
    if use_tqdm is False or use_tqdm is None:
        return None
    if use_tqdm is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="Beam search", unit="token", dynamic_ncols=True)
    if callable(use_tqdm):
        return use_tqdm(total=total, desc="Beam search", unit="token")
    raise TypeError(f"use_tqdm must be a bool or a callable that makes a tqdm bar, got {type(use_tqdm).__name__}")
