"""Host side of sampling (jaxllm/runner/sampling_metadata.py, sampler_config.py): which variant a step needs,
the ladders of array widths, bad input, the bad-words rule and the one-buffer packing."""

import dataclasses

import numpy as np
import pytest
from sampler_rows import seq, sp

from jaxllm.runner.sampler_config import (
    FILTER_CONFIG,
    FULL_CONFIG,
    GREEDY_CONFIG,
    MIN_P_CONFIG,
    SAMPLE_CONFIG,
    TOP_K_CONFIG,
    TOP_P_CONFIG,
    TOP_P_MIN_P_CONFIG,
    SamplerConfig,
    covers,
    start_up_cover,
)
from jaxllm.runner.sampling_metadata import (
    bad_words_banned_ids,
    build_sampling_metadata,
    pack_sampling_metadata,
    unpack_sampling_metadata,
)
from jaxllm.sampling_params import MAX_LOGPROBS


def test_config_choice_and_ladders():
    V = 1000
    _, cfg = build_sampling_metadata([seq(sp(temperature=0.5))], 2, V)
    assert cfg == SAMPLE_CONFIG
    _, cfg = build_sampling_metadata([seq(sp(temperature=0.5, logprobs=0))], 2, V)
    assert cfg == dataclasses.replace(SAMPLE_CONFIG, num_logprobs=MAX_LOGPROBS)
    _, cfg = build_sampling_metadata([seq(sp(temperature=0.0, logprobs=0))], 2, V)
    assert cfg == dataclasses.replace(SAMPLE_CONFIG, random=False, num_logprobs=MAX_LOGPROBS)  # no noise
    _, cfg = build_sampling_metadata([seq(sp(temperature=0.5, top_p=0.9)), seq(sp(temperature=0.0))], 2, V)
    assert cfg == dataclasses.replace(SAMPLE_CONFIG, top_p=True)
    _, cfg = build_sampling_metadata([seq(sp(temperature=0.5, min_p=0.1))], 2, V)
    assert cfg == dataclasses.replace(SAMPLE_CONFIG, min_p=True)
    # every variant but the greedy one is served by a compiled superset of its parts with the same shapes
    assert covers(FILTER_CONFIG, cfg) and covers(FULL_CONFIG, cfg) and not covers(cfg, FILTER_CONFIG)
    assert not covers(FULL_CONFIG, GREEDY_CONFIG) and covers(GREEDY_CONFIG, GREEDY_CONFIG)
    assert not covers(FULL_CONFIG, dataclasses.replace(cfg, bias_width=32))
    bias = {i: 1.0 for i in range(9)}
    _, cfg = build_sampling_metadata(
        [seq(sp(temperature=0.0, logit_bias=bias, presence_penalty=0.5), token_ids=range(65))], 2, V
    )
    assert (cfg.bias_width, cfg.allowed_width, cfg.banned_width, cfg.penalty_len) == (32, 8, 8, 128)
    # a row that does not sample this step (mid-prompt chunk) is neutral and does not widen the variant
    _, cfg = build_sampling_metadata(
        [seq(sp(temperature=1.0, logprobs=5), do_sample=False), seq(sp(temperature=0.0))], 2, V
    )
    assert cfg == GREEDY_CONFIG
    with pytest.raises(ValueError, match="greedy_only"):
        SamplerConfig(greedy_only=True, num_logprobs=20)


@pytest.mark.parametrize("rows, needed, served", [
    ([{"min_p": 0.05}], {"min_p"}, MIN_P_CONFIG),
    ([{"top_k": 50}], {"top_k"}, TOP_K_CONFIG),
    # every sampled row draws from its top values (top_k < 64; greedy rows take their maximum): top-k alone
    ([{"top_k": 20, "top_p": 0.95}, {"top_k": 5, "min_p": 0.1}, {"temperature": 0.0}], {"top_k", "min_p"},
     TOP_K_CONFIG),
    ([{"top_k": 65}], {"top_p"}, TOP_P_CONFIG),  # beyond the top values: the membership pass counts
    ([{"top_p": 0.95}, {}], {"top_p"}, TOP_P_CONFIG),
    ([{"top_p": 0.9, "min_p": 0.05}], {"top_p", "min_p"}, TOP_P_MIN_P_CONFIG),  # min_p's max pass, not top values
    ([{"top_p": 0.9, "min_p": 0.05}, {"top_k": 70}], {"top_p", "min_p"}, TOP_P_MIN_P_CONFIG),
    ([{"top_k": 64}], {"top_k", "top_p"}, FILTER_CONFIG),  # its k-th value: the top values; its draw: the race
    ([{"top_k": 20}, {"top_p": 0.95}], {"top_k", "top_p"}, FILTER_CONFIG),
    ([{"top_k": 20}, {}], {"top_k", "top_p"}, FILTER_CONFIG),  # a plain row beside: the race for all
])
def test_each_filter_is_served_by_its_own_start_up_variant(rows, needed, served):
    """A batch using one filter runs that filter's passes only: the cheapest start-up variant covering it (as
    ``Programs.sampler_variant`` picks) is the filter's own, not the one with every part."""
    V = 1000
    _, cfg = build_sampling_metadata([seq(sp(**{"temperature": 0.6, **r})) for r in rows], len(rows), V)
    assert {f for f in ("min_p", "top_k", "top_p") if getattr(cfg, f)} == needed
    assert start_up_cover(cfg) == served


@pytest.mark.parametrize(
    "params, match",
    [
        (sp(logit_bias={1000: 1.0}), "logit_bias"),
        (sp(allowed_token_ids=[-1]), "allowed_token_ids"),
        (sp(logprobs=-2), "logprobs=-2"),
        (sp(top_k=-2), "top_k=-2"),
        (sp(bad_words=["x"]), "bad_words"),
        (sp(bad_words_token_ids=[[5, 2000]]), "bad_words_token_ids"),
    ],
)
def test_bad_input_names_the_field(params, match):
    with pytest.raises(ValueError, match=match):
        build_sampling_metadata([seq(params)], 1, 1000)
    with pytest.raises(ValueError, match="padded_num_seqs"):
        build_sampling_metadata([seq(sp()), seq(sp())], 1, 1000)


def test_bad_words_host_rule():
    words = [[7], [1, 2, 9], [3, 8], [4, 5, 6, 11]]
    assert bad_words_banned_ids(words, []) == {7}
    assert bad_words_banned_ids(words, [0, 1, 2]) == {7, 9}
    assert bad_words_banned_ids(words, [2, 3]) == {7, 8}
    assert bad_words_banned_ids(words, [5, 6]) == {7}  # prefix [4, 5, 6] is longer than what matches


def test_pack_unpack_round_trip():
    V = 1000
    seqs = [seq(sp(temperature=0.7, top_p=0.9, min_p=0.05, logit_bias={3: -1.5}, presence_penalty=0.2,
                   allowed_token_ids=[1, 2, 3]), seq_id=0, seed=2**40 + 5, output_index=7),
            seq(sp(temperature=0.0), seq_id=1, banned=(4, 9))]
    md, cfg = build_sampling_metadata(seqs, 4, V)
    flat = pack_sampling_metadata(md, cfg, 4)
    assert flat.dtype == np.int32 and flat.ndim == 1
    back = unpack_sampling_metadata(flat, cfg, 4)
    for f in dataclasses.fields(md):
        want, got = getattr(md, f.name), getattr(back, f.name)
        if want is None:
            assert got is None, f.name
        else:
            np.testing.assert_array_equal(np.asarray(got), want, err_msg=f.name)
            assert np.asarray(got).dtype == want.dtype, f.name
    assert unpack_sampling_metadata(pack_sampling_metadata(*build_sampling_metadata(
        [seq(sp(temperature=0.0))], 2, V), 2), GREEDY_CONFIG, 2) == type(md)()
