"""Data parallelism on 4 fake CPU devices (tests/conftest.py sets XLA_FLAGS): DP=2, DP=4 and DP=2 x TP=2 give
the outputs of one replica for greedy, seeded and unseeded requests; requests spread by outstanding tokens."""

from __future__ import annotations

import jax
import pytest
from hf_models import save_tiny_model

from jaxllm import LLM, BeamSearchParams, SamplingParams

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")

PROMPTS = [{"prompt_token_ids": [(7 * i + j) % 250 + 3 for j in range(n)]} for i, n in enumerate((9, 23, 5, 14, 30, 3))]
PARAMS = [SamplingParams(temperature=0, max_tokens=6, ignore_eos=True),
          SamplingParams(temperature=1.0, seed=11, max_tokens=7, ignore_eos=True),
          SamplingParams(temperature=0.8, top_k=20, max_tokens=5, ignore_eos=True),  # unseeded: LLM's seed
          SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, logprobs=2),
          SamplingParams(temperature=1.0, seed=3, n=2, max_tokens=6, ignore_eos=True),
          SamplingParams(temperature=0.7, max_tokens=8, ignore_eos=True)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("dp-llama")
    save_tiny_model(path, "LlamaForCausalLM")
    return str(path)


def _llm(checkpoint, **kwargs):
    return LLM(checkpoint, skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32, enforce_eager=True,
               seed=5, **kwargs)


def _tokens(outputs):
    return [[list(c.token_ids) for c in o.outputs] for o in outputs]


@pytest.fixture(scope="module")
def reference(checkpoint):
    return _tokens(_llm(checkpoint).generate(PROMPTS, PARAMS, use_tqdm=False))


@pytest.mark.parametrize("dp,tp", [(2, 1), (4, 1), (2, 2)])
def test_outputs_match_one_replica(checkpoint, reference, dp, tp):
    llm = _llm(checkpoint, data_parallel_size=dp, tensor_parallel_size=tp)
    engine = llm.llm_engine
    devices = [{d.id for d in r.mesh.devices.flat} for r in engine.runners]
    assert len(devices) == dp and all(len(d) == tp for d in devices)
    assert len(set().union(*devices)) == dp * tp  # every replica on its own devices
    assert llm.get_world_size() == dp * tp and llm.get_world_size(include_dp=False) == tp
    assert _tokens(llm.generate(PROMPTS, PARAMS, use_tqdm=False)) == reference
    assert all(e.stats.num_steps > 0 for e in engine.engines)  # every replica served requests
    assert not engine.has_unfinished_requests()


def test_per_replica_calls_and_beam_search(checkpoint, reference):
    llm = _llm(checkpoint, data_parallel_size=2)
    assert llm.collective_rpc(lambda runner: runner.mesh.devices.flat[0].id) == [0, 1]
    assert llm.apply_model(lambda model: type(model).__name__) == ["LlamaForCausalLM"] * 2
    llm.update_weights(llm.get_weights())  # replica 0's arrays, copied onto replica 1's device
    assert llm.collective_rpc("reload_weights") == [None, None]  # each replica reads the checkpoint again
    assert _tokens(llm.generate(PROMPTS, PARAMS, use_tqdm=False)) == reference
    one = _llm(checkpoint).beam_search([{"prompt_token_ids": [5, 6, 7]}], BeamSearchParams(beam_width=2, max_tokens=3))
    two = llm.beam_search([{"prompt_token_ids": [5, 6, 7]}], BeamSearchParams(beam_width=2, max_tokens=3))
    assert [s.tokens for s in one[0].sequences] == [s.tokens for s in two[0].sequences]


def test_requests_spread_by_outstanding_tokens(checkpoint):
    llm = _llm(checkpoint, data_parallel_size=2)
    engine = llm.llm_engine
    sizes = [(20, 30), (5, 5), (5, 5), (3, 4)]  # (prompt tokens, max_tokens)
    for i, (n, m) in enumerate(sizes):
        engine.add_request(str(i), {"prompt_token_ids": [3] * n}, SamplingParams(max_tokens=m, ignore_eos=True))
    # 50 -> replica 0; 10 -> 1; 10 -> 1 (20 < 50); 7 -> 1 (27 < 50)
    assert [engine.replica_of(str(i)) for i in range(4)] == [0, 1, 1, 1]
    engine.abort_request(["0", "1"])
    engine.add_request("4", {"prompt_token_ids": [3] * 4}, SamplingParams(max_tokens=4, ignore_eos=True))
    assert engine.replica_of("4") == 0  # replica 0 is empty again
    while engine.has_unfinished_requests():
        engine.step()
    assert engine._load == [0, 0]


def test_bad_sizes_raise(checkpoint):
    with pytest.raises(ValueError, match="data_parallel_size"):
        _llm(checkpoint, data_parallel_size=0)
    with pytest.raises(ValueError, match="data_parallel_size=4 needs 8 devices"):
        _llm(checkpoint, data_parallel_size=4, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="enable_sleep_mode"):
        _llm(checkpoint, data_parallel_size=2, enable_sleep_mode=True)


def test_speculative_decoding_per_replica(checkpoint):
    """n-gram speculation with DP=2: each replica's scheduler drafts for its own sequences; outputs equal one
    replica's with speculation, and the speculative counters (per-position ones too) are the replicas' sums."""
    spec = {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 2, "prompt_lookup_min": 1,
            "disable_by_batch_size": 64}  # every step speculates (the automatic rule would not on a tiny CPU model)
    prompts = [{"prompt_token_ids": [5, 6, 7] * 4}, {"prompt_token_ids": [9, 10] * 6},
               {"prompt_token_ids": [20, 21, 22, 23] * 3}, {"prompt_token_ids": [30, 31] * 5}]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    one = _llm(checkpoint, speculative_config=spec)
    llm = _llm(checkpoint, data_parallel_size=2, speculative_config=spec)
    assert _tokens(llm.generate(prompts, params, use_tqdm=False)) == _tokens(one.generate(prompts, params,
                                                                                          use_tqdm=False))
    stats, replicas = llm.llm_engine.stats, [e.stats for e in llm.llm_engine.engines]
    assert stats.spec_decode_num_draft_tokens == sum(s.spec_decode_num_draft_tokens for s in replicas) > 0
    assert sum(stats.spec_decode_num_accepted_tokens_per_pos) == stats.spec_decode_num_accepted_tokens


def test_draft_model_per_replica_under_tensor_parallelism(checkpoint, reference):
    """Draft-model speculation with DP=2 x TP=2 (the draft's weights and cache sharded like the target's, one
    draft per replica): greedy outputs equal one replica's without speculation; the target as its own draft
    accepts every draft."""
    spec = {"method": "draft_model", "model": checkpoint, "num_speculative_tokens": 2, "disable_by_batch_size": 64}
    llm = _llm(checkpoint, data_parallel_size=2, tensor_parallel_size=2, speculative_config=spec)
    greedy = [i for i, p in enumerate(PARAMS) if p.temperature == 0]
    outs = llm.generate([PROMPTS[i] for i in greedy], [PARAMS[i] for i in greedy], use_tqdm=False)
    assert _tokens(outs) == [reference[i] for i in greedy]
    stats = llm.llm_engine.stats
    assert stats.spec_decode_num_accepted_tokens == stats.spec_decode_num_draft_tokens > 0
