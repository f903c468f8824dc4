"""Host-side packing of a ScheduledBatch into the padded arrays of one jitted step (numpy only).

This runs once per engine step for up to ``max_num_seqs`` sequences, on the critical path between two device
steps, so it works on Python lists and converts each array once instead of doing small numpy ops per sequence.
"""

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


def _padded(values: list[int], size: int, fill: int) -> np.ndarray:
    out = np.full(size, fill, np.int32)
    out[:len(values)] = values
    return out


def build_step_inputs(batch: ScheduledBatch, bucket: Bucket, block_size: int, max_blocks_per_seq: int) -> StepInputs:
    T, S = bucket.num_tokens, bucket.num_seqs
    ids: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    qsl: list[int] = [0]
    lens: list[int] = []
    block_tables = np.zeros((S, max_blocks_per_seq), np.int32)
    for i, s in enumerate(batch.seqs):
        start, end, table = s.start, s.end, s.block_table
        if end - start == 1:  # decode: the common case, no ranges
            ids.append(s.token_ids[start])
            pos.append(start)
            slots.append(table[start // block_size] * block_size + start % block_size)
        else:
            ids.extend(s.token_ids[start:end])
            p = range(start, end)
            pos.extend(p)
            slots.extend(table[x // block_size] * block_size + x % block_size for x in p)
        block_tables[i, :len(table)] = table
        lens.append(end)
        qsl.append(len(ids))
    n = len(ids)
    qsl_arr = _padded(qsl, S + 1, n)
    logits_indices = np.maximum(qsl_arr[1:] - 1, 0)
    return StepInputs(_padded(ids, T, 0), _padded(pos, T, 0), logits_indices,
                      AttentionMetadata(_padded(slots, T, -1), qsl_arr, _padded(lens, S, 0), block_tables))


def dummy_step_inputs(bucket: Bucket, max_blocks_per_seq: int) -> StepInputs:
    """An all-padding step (no sequence, nothing written): for warm-up and shape specs."""
    T, S = bucket.num_tokens, bucket.num_seqs
    return StepInputs(np.zeros(T, np.int32), np.zeros(T, np.int32), np.zeros(S, np.int32),
                      AttentionMetadata(np.full(T, -1, np.int32), np.zeros(S + 1, np.int32), np.zeros(S, np.int32),
                                        np.zeros((S, max_blocks_per_seq), np.int32)))


def pack_step_inputs(inputs: StepInputs) -> np.ndarray:
    """All int32 step arrays in one flat buffer: one host->device transfer per step instead of seven."""
    a = inputs.attention
    return np.concatenate([inputs.input_ids, inputs.positions, a.slot_mapping, inputs.logits_indices,
                           a.query_start_loc, a.seq_lens, a.block_tables.ravel()])


def unpack_step_inputs(flat, num_tokens: int, num_seqs: int, max_blocks_per_seq: int) -> StepInputs:
    """Inverse of ``pack_step_inputs`` (works on numpy and on traced jax arrays; sizes are static)."""
    T, S, P = num_tokens, num_seqs, max_blocks_per_seq
    sizes = [T, T, T, S, S + 1, S, S * P]
    parts, offset = [], 0
    for n in sizes:
        parts.append(flat[offset:offset + n])
        offset += n
    ids, pos, slots, logits_idx, qsl, lens, tables = parts
    return StepInputs(ids, pos, logits_idx, AttentionMetadata(slots, qsl, lens, tables.reshape(S, P)))
