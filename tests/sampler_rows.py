"""Sampling rows for the sampler tests: ``sp(**fields)`` stands in for SamplingParams (only the fields a test
sets), ``seq(params, ...)`` is a ScheduledSeq whose whole token list is computed this step."""

import types

from jaxllm.engine.batch import ScheduledSeq


def sp(**kw):
    return types.SimpleNamespace(**kw)


def seq(
    params,
    seq_id=0,
    token_ids=(1, 2, 3),
    num_prompt_tokens=None,
    seed=0,
    output_index=0,
    banned=(),
    do_sample=True,
):
    token_ids = list(token_ids)
    return ScheduledSeq(
        seq_id=seq_id,
        token_ids=token_ids,
        start=0,
        num_new_tokens=len(token_ids),
        block_table=[0],
        num_prompt_tokens=len(token_ids) if num_prompt_tokens is None else num_prompt_tokens,
        sampling_params=params,
        sample=do_sample,
        output_index=output_index,
        rng_seed=seed,
        banned_token_ids=tuple(banned),
    )
