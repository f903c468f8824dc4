"""Host-side packing of a ScheduledBatch into the padded arrays of one jitted step (numpy only)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxllm.engine.batch import ScheduledBatch
from jaxllm.models.attention import AttentionMetadata
from jaxllm.runner.buckets import Bucket


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class StepInputs:
    """Everything the model needs for one ragged step (T padded tokens, S padded sequences, P blocks)."""

    input_ids: np.ndarray  # [T] int32
    positions: np.ndarray  # [T] int32
    logits_indices: np.ndarray  # [S] int32: flat index of each sequence's last new token
    attention: AttentionMetadata


def build_step_inputs(batch: ScheduledBatch, bucket: Bucket, block_size: int, max_blocks_per_seq: int) -> StepInputs:
    T, S = bucket.num_tokens, bucket.num_seqs
    input_ids = np.zeros(T, np.int32)
    positions = np.zeros(T, np.int32)
    slot_mapping = np.full(T, -1, np.int32)
    query_start_loc = np.zeros(S + 1, np.int32)
    seq_lens = np.zeros(S, np.int32)
    block_tables = np.zeros((S, max_blocks_per_seq), np.int32)
    logits_indices = np.zeros(S, np.int32)
    offset = 0
    for i, s in enumerate(batch.seqs):
        n, start, end = s.num_new_tokens, s.start, s.end
        input_ids[offset:offset + n] = s.token_ids[start:end]
        pos = np.arange(start, end, dtype=np.int32)
        positions[offset:offset + n] = pos
        table = np.asarray(s.block_table, np.int32)
        slot_mapping[offset:offset + n] = table[pos // block_size] * block_size + pos % block_size
        block_tables[i, :len(table)] = table
        seq_lens[i] = end
        offset += n
        query_start_loc[i + 1] = offset
        logits_indices[i] = offset - 1
    query_start_loc[len(batch.seqs) + 1:] = offset
    return StepInputs(input_ids, positions, logits_indices,
                      AttentionMetadata(slot_mapping, query_start_loc, seq_lens, block_tables))


def dummy_step_inputs(bucket: Bucket, max_blocks_per_seq: int) -> StepInputs:
    """An all-padding step (no sequence, nothing written): for warm-up and shape specs."""
    T, S = bucket.num_tokens, bucket.num_seqs
    return StepInputs(np.zeros(T, np.int32), np.zeros(T, np.int32), np.zeros(S, np.int32),
                      AttentionMetadata(np.full(T, -1, np.int32), np.zeros(S + 1, np.int32), np.zeros(S, np.int32),
                                        np.zeros((S, max_blocks_per_seq), np.int32)))
