"""The dense encoder path's batch plan (pooling/batching.py) and its results: every request once, in prompt
order, against transformers for mixed lengths, truncation and batches that cross length buckets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pooling_models import encoder_hidden, save_encoder

from jaxllm import LLM
from jaxllm.bench.embed import EMBED_WORKLOADS
from jaxllm.pooling.batching import batch_rows, length_buckets, plan_batches, plan_stats


@pytest.mark.parametrize("max_len", [10, 16, 20, 64, 512, 8192])
def test_length_buckets(max_len):
    ladder = length_buckets(max_len)
    assert ladder == sorted(set(ladder)) and ladder[-1] == max_len
    assert all(n % 16 == 0 for n in ladder[:-1])
    assert len(ladder) <= 4 * max(1, int(np.log2(max_len / 16)) + 1) + 1
    for short, long in itertools.pairwise(ladder):  # a row pads less than a quarter of its length
        assert long - short <= max(16, short // 4)
    assert length_buckets(512, per_octave=2) == [16, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    with pytest.raises(ValueError, match="per_octave"):
        length_buckets(512, per_octave=0)


def _check_plan(lengths, tokens, seqs):
    buckets = length_buckets(max(lengths))
    plan = plan_batches(lengths, buckets, tokens, seqs)
    assert sorted(j for batch, _ in plan for j in batch) == list(range(len(lengths)))
    for k, (batch, length) in enumerate(plan):
        assert length in buckets and all(lengths[j] <= length for j in batch)
        assert 1 <= len(batch) <= batch_rows(length, tokens, seqs)
        assert length == min(n for n in buckets if n >= max(lengths[j] for j in batch))
        if k + 1 < len(plan):  # a batch closes only when the next request has no row in it
            nxt = min(lengths[j] for j in plan[k + 1][0])
            grown = min(n for n in buckets if n >= nxt)
            assert len(batch) + 1 > batch_rows(grown, tokens, seqs)
            assert plan[k + 1][1] >= length
    return plan


def test_plan_random_lengths():
    rng = np.random.default_rng(0)
    for tokens, seqs in ((64, 4), (512, 16), (8192, 256)):
        lengths = rng.integers(1, 300, 200).tolist()
        _check_plan(lengths, tokens, seqs)
    assert plan_batches([], [16], 64, 4) == []
    assert plan_batches([100], [16, 128], 64, 4) == [([0], 128)]  # longer than the budget: one row


def test_bench_documents_pad_less():
    w = EMBED_WORKLOADS["E-bert"]
    lengths = [len(p) for p in w.requests(30522)[0]]
    stats = {per: plan_stats(lengths, plan_batches(lengths, length_buckets(512, per), 8192, 256), 8192, 256)
             for per in (2, 4)}
    assert stats[4]["padded_over_real"] < 1.1 < stats[2]["padded_over_real"]
    assert stats[4]["programs"] <= len(length_buckets(512)) and stats[4]["real_tokens"] == sum(lengths)


def test_mixed_lengths_in_order_against_transformers(tmp_path):
    model = save_encoder(tmp_path, "BertModel")
    # budget 64, 16 rows at most: 1-row batches at length 64, 4 rows at 16, crossing buckets 16 / 32 / 48 / 64
    llm = LLM(str(tmp_path), max_model_len=64, max_num_seqs=16, max_num_batched_tokens=64)
    rng = np.random.default_rng(1)
    lengths = [3, 60, 17, 1, 33, 16, 64, 5, 40, 2, 31, 9]
    prompts = [rng.integers(5, 90, n).tolist() for n in lengths]
    outs = llm.embed([{"prompt_token_ids": p} for p in prompts], truncate_prompt_tokens=48, use_tqdm=False)
    assert [o.prompt_token_ids for o in outs] == [p[-48:] for p in prompts]
    for p, out in zip(prompts, outs):
        hidden = encoder_hidden(model, p[-48:]).numpy()
        want = hidden[0] / np.linalg.norm(hidden[0])  # no sentence-transformers files: CLS, normalized
        np.testing.assert_allclose(out.outputs.embedding, want, atol=1e-4)
    alone = [llm.embed({"prompt_token_ids": p[-48:]}, use_tqdm=False)[0].outputs.embedding for p in prompts[:3]]
    np.testing.assert_allclose([o.outputs.embedding for o in outs[:3]], alone, atol=1e-5)


def test_pooling_batched_tokens_default():
    """vLLM's pooling default on GPUs (32768 tokens a step); an explicit value and the CPU default stay."""
    from jaxllm.engine_args import POOLING_MAX_NUM_BATCHED_TOKENS, EngineArgs

    assert POOLING_MAX_NUM_BATCHED_TOKENS == 32768
    assert EngineArgs().resolve("gpu", 512, pooling=True).max_num_batched_tokens == 32768
    assert EngineArgs().resolve("gpu", 512).max_num_batched_tokens == 8192
    assert EngineArgs(max_num_batched_tokens=4096).resolve("gpu", 512, pooling=True).max_num_batched_tokens == 4096
    assert EngineArgs().resolve("cpu", 512, pooling=True).max_num_batched_tokens == 256


def test_pooled_output_floats_handed_over_once():
    """A runner's early float conversion gives the same lists as converting afterwards, never shared."""
    from jaxllm.pooling.outputs import EmbeddingOutput, pooled_output

    data = np.arange(4, dtype=np.float32) / 3
    out = pooled_output(data)
    first, second = EmbeddingOutput.from_base(out), EmbeddingOutput.from_base(out)
    assert first.embedding == second.embedding == data.tolist() and first.embedding is not second.embedding
    np.testing.assert_array_equal(out.data, data)
    assert pooled_output(np.float32(2.0))._floats is None  # a score stays a scalar


def test_rows_keep_attention_scores_bounded():
    """Long buckets keep XLA's [B, H, L, L] float32 scores within SCORES_BYTES; BERT-base sizes are unaffected."""
    from jaxllm.pooling.batching import SCORES_BYTES

    assert batch_rows(512, 32768, 256, num_heads=12) == 64 and batch_rows(128, 32768, 256, num_heads=12) == 256
    assert batch_rows(4096, 32768, 256, num_heads=16) == 2 and batch_rows(8192, 32768, 256, num_heads=16) == 1
    assert 2 * 16 * 4096 * 4096 * 4 <= SCORES_BYTES
    plan = plan_batches([8192, 8000, 4096, 4000, 100], [128, 4096, 8192], 32768, 256, num_heads=16)
    assert [len(b) for b, _ in plan] == [2, 1, 1, 1] and [n for _, n in plan] == [4096, 4096, 8192, 8192]
