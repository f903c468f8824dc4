"""GPU only: a bf16 decoder embedder on the paged engine (GPU attention kernels, compiled buckets) still matches
transformers (fp32) closely, including a prompt chunked over several steps."""

from __future__ import annotations

import numpy as np
import pytest
from pooling_models import hidden_states, save_decoder_embedder

from jaxllm import LLM

pytestmark = pytest.mark.gpu


def test_qwen3_embedder_bf16(tmp_path):
    model = save_decoder_embedder(tmp_path)
    llm = LLM(str(tmp_path), runner="pooling", dtype="bfloat16", max_num_seqs=8, max_num_batched_tokens=64,
              max_model_len=256)
    ids = [[5 + (i * 7 + j) % 400 for j in range(n)] for i, n in enumerate((3, 17, 40, 100, 200))]
    outs = llm.embed([{"prompt_token_ids": x} for x in ids], use_tqdm=False)
    for x, out in zip(ids, outs):
        want = hidden_states(model, x)[-1].numpy()
        want /= np.linalg.norm(want)
        assert float(np.dot(out.outputs.embedding, want)) > 0.995
