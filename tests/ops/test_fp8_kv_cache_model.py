"""The model's paged path (PagedAttention: write + attend) over an fp8 KV cache: a tiny random Llama prefilled
in two chunks through a scattered block table (the second chunk reads the first chunk's K/V back from the
fp8 cache) against the model's dense causal forward. The cache dtype alone selects fp8: nothing else is
passed to the model."""

from __future__ import annotations

import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hf_models import save_tiny_model
from jaxllm.ops.paged_attention import allocate_kv_cache, resolve_kv_cache_dtype

import jaxllm
from jaxllm.models.attention import AttentionMetadata

BS, TABLE = 16, [5, 2, 7]  # 48 token slots in three scattered blocks


@pytest.fixture(scope="module")
def model_and_dense_logits(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_fp8kv")
    save_tiny_model(path, "LlamaForCausalLM", vocab_size=256)
    model = jaxllm.load_model(str(path))
    ids = np.random.RandomState(0).randint(0, 256, 40).astype(np.int32)
    return model, ids, np.asarray(model(ids[None]))[0]


def paged_logits(model, ids, kv_cache_dtype):
    cfg = model.config
    dtype = resolve_kv_cache_dtype(kv_cache_dtype, jnp.float32)
    caches = allocate_kv_cache(cfg.num_layers, 8, BS, cfg.num_kv_heads, cfg.head_dim, dtype=dtype)
    out = []
    for lo, hi in ((0, 24), (24, 40)):
        pos = np.arange(lo, hi, dtype=np.int32)
        md = AttentionMetadata(
            slot_mapping=jnp.asarray(np.asarray(TABLE)[pos // BS] * BS + pos % BS, jnp.int32),
            query_start_loc=jnp.asarray([0, hi - lo], jnp.int32), seq_lens=jnp.asarray([hi], jnp.int32),
            block_tables=jnp.asarray([TABLE], jnp.int32))
        hidden, caches = model.forward_paged(jnp.asarray(ids[lo:hi]), jnp.asarray(pos), caches, md)
        out.append(np.asarray(model.compute_logits(hidden)))
    assert all(c.dtype == dtype for c in caches)
    return np.concatenate(out)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# measured: fp8 (e4m3) rel 0.013, log-softmax 0.016; e5m2 0.033, 0.030
@pytest.mark.parametrize("kv_cache_dtype,tol", [("auto", 1e-5), ("fp8", 0.05), ("fp8_e5m2", 0.1)])
def test_paged_forward_over_fp8_cache_matches_dense(model_and_dense_logits, kv_cache_dtype, tol):
    model, ids, dense = model_and_dense_logits
    got = paged_logits(model, ids, kv_cache_dtype)
    rel = np.linalg.norm(got - dense) / np.linalg.norm(dense)
    assert rel < tol
    if kv_cache_dtype != "auto":
        assert rel > 1e-5  # the cache really was fp8
        assert np.abs(log_softmax(got) - log_softmax(dense)).max() < tol
