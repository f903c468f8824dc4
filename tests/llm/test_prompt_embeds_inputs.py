"""EmbedsPrompt parsing (``prompt_embeds_array``: numpy, jax and torch arrays of any float dtype) and the host
packing of a step's embedding rows (``pack_prompt_embeds``), without an engine."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxllm.engine.batch import ScheduledBatch, ScheduledSeq
from jaxllm.inputs import prompt_embeds_array
from jaxllm.runner.prompt_embeds import pack_prompt_embeds
from jaxllm.sampling_params import SamplingParams

ROWS = np.arange(12, dtype=np.float32).reshape(3, 4) / 8  # exact in bf16 and fp16


@pytest.mark.parametrize("value", [ROWS, ROWS[None], ROWS.astype(np.float16), jnp.asarray(ROWS, jnp.bfloat16),
                                   torch.tensor(ROWS, dtype=torch.bfloat16, requires_grad=True),
                                   torch.tensor(ROWS[None], dtype=torch.float16)])
def test_float_arrays_of_every_kind_are_float32_rows(value):
    out = prompt_embeds_array("prompt 0", {"prompt_embeds": value}, 4)
    assert out.dtype == np.float32 and out.shape == (3, 4) and np.array_equal(out, ROWS)


def test_the_option_off_is_named():
    with pytest.raises(ValueError, match="enable_prompt_embeds=True"):
        prompt_embeds_array("prompt 2", {"prompt_embeds": ROWS}, None)
    with pytest.raises(ValueError, match=r"prompt 0: .*shape \[num_tokens, 4\].*got \(2, 3, 4\)"):
        prompt_embeds_array("prompt 0", {"prompt_embeds": np.stack([ROWS, ROWS])}, 4)
    with pytest.raises(ValueError, match="infinite"):
        prompt_embeds_array("prompt 0", {"prompt_embeds": np.full((1, 4), np.inf)}, 4)


def _seq(seq_id, start, n, embeds=None, num_prompt=8):
    return ScheduledSeq(seq_id=seq_id, token_ids=[0] * num_prompt, start=start, num_new_tokens=n, block_table=[0],
                        num_prompt_tokens=num_prompt, sampling_params=SamplingParams(), sample=False,
                        output_index=0, rng_seed=0, prompt_embeds=embeds)


def test_rows_land_at_their_tokens_flat_indices():
    embeds = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
    batch = ScheduledBatch([_seq(0, 3, 1), _seq(1, 6, 4, embeds), _seq(2, 1, 2, embeds)])
    qsl = np.array([0, 1, 5, 7, 7])  # the ids sequence, a chunk running past the prompt (2 rows), a chunk
    flags, rows = pack_prompt_embeds(batch, qsl, 8, 2, np.float32)
    assert flags.tolist() == [False, True, True, False, False, True, True, False]
    assert np.array_equal(rows[1:3], embeds[6:8]) and np.array_equal(rows[5:7], embeds[1:3])
    assert not rows[[0, 3, 4, 7]].any()
    decoding = ScheduledBatch([_seq(1, 8, 1, embeds, num_prompt=8)])  # past the prompt: ids only
    assert pack_prompt_embeds(decoding, np.array([0, 1]), 8, 2, np.float32) is None
