"""The speculative sampling rows are copies of the scheduled decode made without ``dataclasses.replace`` (host
work per speculating sequence): they must equal what ``replace`` gives, field for field."""

from __future__ import annotations

import dataclasses

from jaxllm.engine.batch import ScheduledSeq
from jaxllm.engine.speculation import _copy_with


def test_copy_with_equals_dataclasses_replace():
    assert not hasattr(ScheduledSeq, "__post_init__") and not hasattr(ScheduledSeq, "__slots__")
    sseq = ScheduledSeq(seq_id=3, token_ids=[1, 2, 3], start=2, num_new_tokens=3, block_table=[0], num_prompt_tokens=2,
                        sampling_params=None, sample=True, output_index=1, rng_seed=7, banned_token_ids=(5,),
                        want_prompt_logprobs=True, draft_token_ids=(4, 4), spec_rows=())
    changes = {"token_ids": [1, 2, 3, 4], "output_index": 2, "banned_token_ids": (), "want_prompt_logprobs": False,
               "draft_token_ids": (), "spec_rows": ()}
    row = _copy_with(sseq, **changes)
    assert row == dataclasses.replace(sseq, **changes) and type(row) is ScheduledSeq and row.end == 5
    assert sseq.output_index == 1 and sseq.draft_token_ids == (4, 4)  # the original is unchanged
