"""The automatic speculation rule (no ``disable_by_batch_size``) on a tiny random Llama on the CPU: greedy outputs
token-identical to no speculation, a lone request whose text repeats verifies drafts, every program compiled at
start-up; and the draft model's q arrays are counted when the KV cache is sized to fill the device."""

from __future__ import annotations

import types

import pytest

from jaxllm import LLM, SamplingParams
from jaxllm.spec_decode.draft_runner import DraftRunner

SPEC = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1}
PROMPTS = [[5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7], [11, 12, 13, 14, 15], list(range(20, 40)), [9, 9, 9, 9, 9, 9]]


@pytest.fixture(scope="module")
def auto_llm(llama_dir):
    return LLM(str(llama_dir[0]), max_num_seqs=4, max_num_batched_tokens=16, speculative_config=SPEC)


def gen(llm, prompts):
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                                          use_tqdm=False)]


def test_greedy_identical_and_a_repeating_request_speculates(llama_llm, auto_llm):
    runner, engine = auto_llm.llm_engine.runner, auto_llm.llm_engine
    assert engine.scheduler.speculation.cost is runner.spec_cost is not None
    cap = engine.scheduler.speculation.max_seqs
    assert cap == runner.spec.max_spec_seqs  # D: the programs' logits rows are compiled for it
    for b in runner.ladder.buckets:
        assert runner.spec.num_rows(b) == min(b.num_tokens, b.num_seqs + min(b.num_seqs, cap) * 3)
    before, stats = runner.num_compilations, engine.stats
    assert gen(auto_llm, PROMPTS) == gen(llama_llm, PROMPTS)
    accepted, steps = stats.spec_decode_num_accepted_tokens, stats.num_steps
    assert gen(auto_llm, PROMPTS[3:]) == gen(llama_llm, PROMPTS[3:])  # its greedy output repeats one token
    assert stats.spec_decode_num_accepted_tokens - accepted >= 10
    assert stats.num_steps - steps < 35  # 40 tokens
    assert runner.num_compilations == before


def draft_stub(max_seqs: int, k: int, vocab: int, draft_block_bytes: int, kv_bytes_given: bool = False):
    """A DraftRunner with only what ``share_device_memory`` reads (no model)."""
    draft = object.__new__(DraftRunner)
    draft._max_seqs, draft._num_k, draft._kv_bytes_given = max_seqs, k, kv_bytes_given
    draft.cfg = types.SimpleNamespace(vocab_size=vocab)
    draft.cache_plan = types.SimpleNamespace(bytes_per_block=draft_block_bytes)
    return draft


def test_draft_probabilities_are_counted_when_the_cache_fills_the_device():
    """k arrays [D, V] float32 (D = the speculating-sequence cap): ~620 MB at k=4, 256 sequences, 152k vocab
    come out of the blocks a cache sized from gpu_memory_utilization gets, not out of thin air."""
    tb, db, blocks, vocab = 2 * 2**20, 2**19, 20_000, 152_064
    plain = types.SimpleNamespace(fills_device=True, num_blocks=blocks, bytes_per_block=tb)
    draft = draft_stub(256, 4, vocab, db)
    draft.share_device_memory(plain, 256)
    assert draft.q_bytes == 4 * 256 * vocab * 4
    assert plain.num_blocks == (blocks * tb - draft.q_bytes) // (tb + db)
    assert blocks * tb // (tb + db) - plain.num_blocks == pytest.approx(draft.q_bytes / (tb + db), abs=1)

    capped = types.SimpleNamespace(fills_device=True, num_blocks=blocks, bytes_per_block=tb)
    draft = draft_stub(256, 4, vocab, db)
    draft.share_device_memory(capped, 32)  # disable_by_batch_size=32 (or the automatic rule's cap)
    assert draft.q_bytes == 4 * 32 * vocab * 4 and capped.num_blocks > plain.num_blocks

    given = types.SimpleNamespace(fills_device=False, num_blocks=blocks, bytes_per_block=tb)
    draft_stub(256, 4, vocab, db, kv_bytes_given=True).share_device_memory(given, 256)
    assert given.num_blocks == blocks * tb // (tb + db)  # kv_cache_memory_bytes: the caches' bytes only

    tight = types.SimpleNamespace(fills_device=True, num_blocks=100, bytes_per_block=tb)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        draft_stub(256, 4, vocab, db).share_device_memory(tight, 256)
