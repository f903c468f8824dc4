"""BlockTableRows (runner/input_batch.py): the per-sequence numpy rows give the same block tables as converting
every table afresh, through growth, a freed sequence's new table and pruning; the warm-up step writes nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxllm.ops.paged_attention.chunked import ragged_paged_attention_chunked

from jaxllm.engine.batch import ScheduledBatch, ScheduledSeq
from jaxllm.runner.buckets import Bucket
from jaxllm.runner.input_batch import (
    BlockTableRows,
    build_step_inputs,
    dummy_step_inputs,
    warm_up_step_inputs,
)


def seq(seq_id, table, length):
    return ScheduledSeq(seq_id, list(range(length)), length - 1, 1, table, 1, None, True, 0, 0)


def same_inputs(batch, rows):
    want = jax.tree_util.tree_leaves(build_step_inputs(batch, Bucket(8, 4), 4, 6))
    got = jax.tree_util.tree_leaves(build_step_inputs(batch, Bucket(8, 4), 4, 6, rows))
    return all(np.array_equal(a, b) for a, b in zip(want, got))


def test_rows_follow_appends_new_tables_and_reordering():
    rows = BlockTableRows(6)
    t0, t1 = [3, 9], [5]
    assert same_inputs(ScheduledBatch([seq(0, t0, 7), seq(1, t1, 3)]), rows)
    t0.append(11)  # the block manager appends to the live list
    assert same_inputs(ScheduledBatch([seq(1, t1, 4), seq(0, t0, 9)]), rows)  # other order
    t1 = [7, 8]  # freed and re-admitted: a new list, other blocks, the same length as before
    assert same_inputs(ScheduledBatch([seq(0, t0, 10), seq(1, t1, 6)]), rows)
    assert rows.gather([seq(1, t1, 6)])[0].tolist() == [7, 8, 0, 0, 0, 0]


def test_finished_sequences_are_forgotten():
    rows = BlockTableRows(2)
    for i in range(1100):
        rows.gather([seq(i, [i % 7], 2)])
    assert len(rows._rows) <= 4 * 256 + 1


def test_warm_up_step_attends_one_token_to_slot_0_and_writes_nothing():
    """The first run of a forward (runner's ``_run_program_once``): its attention's key loop runs (one visible key
    in cache slot 0), and no slot is written, whatever the cache holds."""
    warm, pad = warm_up_step_inputs(Bucket(16, 4), 6), dummy_step_inputs(Bucket(16, 4), 6)
    a = warm.attention
    assert np.all(a.slot_mapping == -1) and not np.any(a.block_tables)
    assert a.query_start_loc.tolist() == [0, 1, 1, 1, 1] and a.seq_lens.tolist() == [1, 0, 0, 0]
    cache = jnp.ones((2, 3, 4, 1, 8), jnp.float32)  # [2, NB, BS, K, D]
    q = jnp.ones((16, 2, 8), jnp.float32)
    out = [ragged_paged_attention_chunked(q, cache, *(jnp.asarray(x) for x in (i.attention.query_start_loc,
                                          i.attention.seq_lens, i.attention.block_tables)), sm_scale=1.0)
           for i in (warm, pad)]
    assert np.allclose(out[0][0], 1.0) and not np.any(out[0][1:]) and not np.any(out[1])  # slot 0's value read
