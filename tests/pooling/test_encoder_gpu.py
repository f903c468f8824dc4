"""GPU only: a bf16 BERT takes the fused cuDNN attention and still matches transformers (fp32) closely."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pooling_models import encoder_hidden, save_encoder, save_modernbert

from jaxllm import LLM

pytestmark = pytest.mark.gpu


def test_bert_bf16_cudnn_attention(tmp_path):
    model = save_encoder(tmp_path, "BertModel")
    llm = LLM(str(tmp_path), dtype="bfloat16", max_num_seqs=8, max_num_batched_tokens=256)
    assert llm._encoder.attention_impl == "cudnn"
    ids = [[5 + (i * 7 + j) % 400 for j in range(n)] for i, n in enumerate((3, 17, 40, 100, 128))]
    outs = llm.embed([{"prompt_token_ids": x} for x in ids], use_tqdm=False)
    for x, out in zip(ids, outs):
        want = encoder_hidden(model, x)[0].numpy()
        want /= np.linalg.norm(want)
        assert float(np.dot(out.outputs.embedding, want)) > 0.999


def test_modernbert_bf16(tmp_path):
    """ModernBERT in bf16: global layers on the fused cuDNN attention, local (windowed) layers on XLA's."""
    model = save_modernbert(tmp_path)
    llm = LLM(str(tmp_path), dtype="bfloat16", max_num_seqs=8, max_num_batched_tokens=256, max_model_len=64)
    assert llm._encoder.attention_impl == "cudnn"
    ids = [[5 + (i * 7 + j) % 240 for j in range(n)] for i, n in enumerate((3, 17, 40, 64))]
    outs = llm.embed([{"prompt_token_ids": x} for x in ids], use_tqdm=False)
    for x, out in zip(ids, outs):
        with torch.no_grad():
            want = model(torch.tensor([x])).last_hidden_state[0, 0].numpy()
        assert float(np.dot(out.outputs.embedding, want / np.linalg.norm(want))) > 0.999
