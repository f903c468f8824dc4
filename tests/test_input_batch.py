"""BlockTableRows (runner/input_batch.py): the per-sequence numpy rows give the same block tables as converting
every table afresh, through growth, a freed sequence's new table and pruning."""

from __future__ import annotations

import jax
import numpy as np

from jaxllm.engine.batch import ScheduledBatch, ScheduledSeq
from jaxllm.runner.buckets import Bucket
from jaxllm.runner.input_batch import BlockTableRows, build_step_inputs


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
