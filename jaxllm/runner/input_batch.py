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
    # [L] int32: flat index of each sampling row's token: each sequence's last new token, and with speculative
    # decoding its last 1 + k (L = S without speculation)
    logits_indices: np.ndarray
    attention: AttentionMetadata


def _padded(values: list[int], size: int, fill: int) -> np.ndarray:
    out = np.full(size, fill, np.int32)
    out[:len(values)] = values
    return out


class BlockTableRows:
    """Per-sequence numpy copies of the block tables, kept across steps so that a step copies the rows it needs
    instead of converting every table from a Python list again (~1 ms per step at 256 sequences on the GPU
    host, the largest Python cost of a B1 step after XLA's launch; docs/performance.md).

    Rigorous because a block table only ever grows by appending to the same list object, and a freed sequence
    gets a new list (engine/block_manager.py): a row is reused while the sequence's ``block_table`` is the very
    object it was copied from (a reference is held, so no id is ever recycled), extended by the new entries."""

    def __init__(self, max_blocks_per_seq: int):
        self.max_blocks_per_seq = max_blocks_per_seq
        self._rows: dict[int, list] = {}  # seq_id -> [the table list, entries copied, row [P] int32]

    def gather(self, seqs) -> list[np.ndarray]:
        """One [P] int32 row per sequence, in order."""
        rows, out = self._rows, []
        for s in seqs:
            table = s.block_table
            entry = rows.get(s.seq_id)
            n = len(table)
            if entry is None or entry[0] is not table:
                row = np.zeros(self.max_blocks_per_seq, np.int32)
                row[:n] = table
                rows[s.seq_id] = [table, n, row]
            else:
                row = entry[2]
                if n > entry[1]:
                    row[entry[1]:n] = table[entry[1]:n]
                    entry[1] = n
            out.append(row)
        if len(rows) > 4 * max(len(seqs), 256):  # forget finished sequences now and then
            live = {s.seq_id for s in seqs}
            self._rows = {k: v for k, v in rows.items() if k in live}
        return out


def build_step_inputs(batch: ScheduledBatch, bucket: Bucket, block_size: int, max_blocks_per_seq: int,
                      table_rows: BlockTableRows | None = None, num_rows: int | None = None) -> StepInputs:
    """``table_rows``: the runner's row cache (faster); without it each table is converted afresh.
    ``num_rows``: L, the padded number of sampling rows (speculative decoding; default S)."""
    T, S = bucket.num_tokens, bucket.num_seqs
    ids: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    qsl: list[int] = [0]
    lens: list[int] = []
    rope_lens: list[int] = []
    block_tables = np.zeros((S, max_blocks_per_seq), np.int32)
    for i, s in enumerate(batch.seqs):
        start, end, table = s.start, s.end, s.block_table
        if s.draft_token_ids:  # speculative decode: the last token, then the drafts
            ids.append(s.token_ids[start])
            ids.extend(s.draft_token_ids)
            p = range(start, end)
            pos.extend(p)
            slots.extend(table[x // block_size] * block_size + x % block_size for x in p)
        elif end - start == 1:  # decode: the common case, no ranges
            ids.append(s.token_ids[start])
            pos.append(start)
            slots.append(table[start // block_size] * block_size + start % block_size)
        else:  # a prefill chunk: its slots in one numpy pass (a Python loop costs ~1 us a token)
            ids.extend(s.token_ids[start:end])
            pos.extend(range(start, end))
            p = np.arange(start, end)
            slots.extend((np.asarray(table)[p // block_size] * block_size + p % block_size).tolist())
        if table_rows is None:
            block_tables[i, :len(table)] = table
        lens.append(end)
        rope_lens.append(s.num_prompt_tokens)  # a token at p follows max(prompt, p + 1): rope_seq_lens
        qsl.append(len(ids))
    if table_rows is not None and batch.seqs:
        block_tables[:len(batch.seqs)] = np.stack(table_rows.gather(batch.seqs))
    n = len(ids)
    qsl_arr = _padded(qsl, S + 1, n)
    logits_indices = np.maximum(qsl_arr[1:] - 1, 0)
    if num_rows is not None:
        logits_indices = _padded(_row_indices(batch, qsl), num_rows, 0)
    return StepInputs(_padded(ids, T, 0), _padded(pos, T, 0), logits_indices,
                      AttentionMetadata(_padded(slots, T, -1), qsl_arr, _padded(lens, S, 0), block_tables,
                                        _padded(rope_lens, S, 0)))


def _row_indices(batch: ScheduledBatch, qsl: list[int]) -> list[int]:
    """Flat token index of every sampling row: the last ``len(s.sampling_rows())`` new tokens of each
    sequence."""
    out: list[int] = []
    for i, s in enumerate(batch.seqs):
        end = qsl[i + 1]
        out.extend(range(end - len(s.sampling_rows()), end))
    return out


def dummy_step_inputs(bucket: Bucket, max_blocks_per_seq: int, num_rows: int | None = None) -> StepInputs:
    """An all-padding step (no sequence, nothing written): for warm-up and shape specs."""
    T, S = bucket.num_tokens, bucket.num_seqs
    return StepInputs(np.zeros(T, np.int32), np.zeros(T, np.int32), np.zeros(num_rows or S, np.int32),
                      AttentionMetadata(np.full(T, -1, np.int32), np.zeros(S + 1, np.int32), np.zeros(S, np.int32),
                                        np.zeros((S, max_blocks_per_seq), np.int32), np.zeros(S, np.int32)))


def warm_up_step_inputs(bucket: Bucket, max_blocks_per_seq: int, num_rows: int | None = None) -> StepInputs:
    """A step that writes nothing but attends: the all-padding step with its first token a one-token sequence
    whose context is cache slot 0 (block table row of zeros), read and never written (every slot is -1). A
    program's first execution on it runs the attention's key loop, which an all-padding step skips (no visible
    key: zero trips), so the loop body's first-execution costs land there too; the cache's contents, whatever
    they are, only reach logits that are thrown away."""
    inputs = dummy_step_inputs(bucket, max_blocks_per_seq, num_rows)
    inputs.attention.query_start_loc[1:] = 1
    inputs.attention.seq_lens[0] = 1
    return inputs


def pack_step_inputs(inputs: StepInputs) -> np.ndarray:
    """All int32 step arrays in one flat buffer: one host->device transfer per step instead of seven."""
    a = inputs.attention
    rope_lens = a.seq_lens if a.rope_lens is None else a.rope_lens
    return np.concatenate([inputs.input_ids, inputs.positions, a.slot_mapping, inputs.logits_indices,
                           a.query_start_loc, a.seq_lens, a.block_tables.ravel(), rope_lens])


def unpack_step_inputs(flat, num_tokens: int, num_seqs: int, max_blocks_per_seq: int,
                       num_rows: int | None = None) -> StepInputs:
    """Inverse of ``pack_step_inputs`` (works on numpy and on traced jax arrays; sizes are static)."""
    T, S, P = num_tokens, num_seqs, max_blocks_per_seq
    sizes = [T, T, T, num_rows or S, S + 1, S, S * P, S]
    parts, offset = [], 0
    for n in sizes:
        parts.append(flat[offset:offset + n])
        offset += n
    ids, pos, slots, logits_idx, qsl, lens, tables, rope_lens = parts
    return StepInputs(ids, pos, logits_idx, AttentionMetadata(slots, qsl, lens, tables.reshape(S, P), rope_lens))
