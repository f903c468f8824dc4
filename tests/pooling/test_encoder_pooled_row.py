"""The encoder's last layer for one pooled row (CLS / LAST): the same rows as the whole forward, and LAST pooling
against transformers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from pooling_models import encoder_hidden, save_encoder

from jaxllm import LLM
from jaxllm.models.bert import BertModel, EncoderConfig

LENGTHS = [5, 16, 1, 0]  # a padding row (length 0) included


@pytest.mark.parametrize("num_layers", [1, 3])
def test_pooled_row_equals_the_full_forward(num_layers):
    cfg = EncoderConfig(architecture="BertModel", vocab_size=64, hidden_size=32, num_layers=num_layers, num_heads=4,
                        intermediate_size=48, max_position_embeddings=32, type_vocab_size=2, layer_norm_eps=1e-12,
                        hidden_act="gelu", position_offset=0)
    graphdef, state = nnx.split(BertModel(cfg))
    forward = jax.jit(lambda state, ids, lens, row: nnx.merge(graphdef, state)(ids, jnp.zeros_like(ids), lens,
                                                                               None, row), static_argnums=3)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 64, (len(LENGTHS), 16)), jnp.int32)
    lens = jnp.asarray(LENGTHS, jnp.int32)
    full, cls, last = (np.asarray(forward(state, ids, lens, row)) for row in (None, "CLS", "LAST"))
    assert cls.shape == last.shape == (len(LENGTHS), 1, 32)
    np.testing.assert_allclose(cls[:3, 0], full[:3, 0], atol=2e-5)
    np.testing.assert_allclose(last[:3, 0], full[np.arange(3), np.asarray(LENGTHS[:3]) - 1], atol=2e-5)


def test_last_pooling_against_transformers(tmp_path):
    model = save_encoder(tmp_path, "BertModel")
    llm = LLM(str(tmp_path), pooler_config={"pooling_type": "LAST"}, max_model_len=64, max_num_seqs=4,
              max_num_batched_tokens=64, enforce_eager=True)
    assert llm.pooling_info.pooling_type == "LAST"
    prompts = [[7, 8, 9], list(range(5, 45)), [11]]
    outs = llm.embed([{"prompt_token_ids": p} for p in prompts], use_tqdm=False)
    for p, out in zip(prompts, outs):
        want = encoder_hidden(model, p).numpy()[-1]
        np.testing.assert_allclose(out.outputs.embedding, want / np.linalg.norm(want), atol=1e-4)
