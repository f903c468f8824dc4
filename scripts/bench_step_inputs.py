"""Host cost of packing one decode step's inputs (runner/input_batch.build_step_inputs), with and without the
runner's per-sequence block-table rows: 256 decoding sequences of 200..2000 tokens, block size 16. CPU only.

    python scripts/bench_step_inputs.py
"""

from __future__ import annotations

import random
import time

from jaxllm.engine.batch import ScheduledBatch, ScheduledSeq
from jaxllm.runner.buckets import Bucket
from jaxllm.runner.input_batch import BlockTableRows, build_step_inputs

NUM_SEQS, BLOCK, MAX_BLOCKS, REPEATS = 256, 16, 128, 500


def decode_batch() -> ScheduledBatch:
    rng = random.Random(0)
    seqs = []
    for i in range(NUM_SEQS):
        n = rng.randint(200, 2000)
        table = list(range(i * MAX_BLOCKS, i * MAX_BLOCKS + -(-n // BLOCK)))
        seqs.append(ScheduledSeq(i, list(range(n)), n - 1, 1, table, 100, None, True, 5, 0))
    return ScheduledBatch(seqs)


def ms_per_step(batch, rows) -> float:
    bucket = Bucket(NUM_SEQS, NUM_SEQS)
    for _ in range(20):
        build_step_inputs(batch, bucket, BLOCK, MAX_BLOCKS, rows)
    t = time.perf_counter()
    for _ in range(REPEATS):
        build_step_inputs(batch, bucket, BLOCK, MAX_BLOCKS, rows)
    return (time.perf_counter() - t) / REPEATS * 1e3


if __name__ == "__main__":
    batch = decode_batch()
    print(f"tables converted every step: {ms_per_step(batch, None):.2f} ms/step")
    print(f"per-sequence rows (runner):  {ms_per_step(batch, BlockTableRows(MAX_BLOCKS)):.2f} ms/step")
