"""The opt-in int4 layout read through XLA's own int4 type (JAXLLM_INT4_LAYOUT=s4, jaxllm/weights/int4_layout.py): AWQ and
GPTQ checkpoints load into it, dequantize to exactly the packed layout's weights, give the same logits at TP=1 and
TP=2 and the same greedy tokens through the engine; a bad value fails before loading."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from int4_checkpoints import int4_checkpoint

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.models.quant_int4 import dequantize_int4_weight

CASES = {"awq-g32": ("awq", 32, False), "gptq-g32-act-order": ("gptq", 32, True)}


@pytest.fixture(scope="module", params=sorted(CASES))
def ckpt(request, tmp_path_factory):
    method, group, desc_act = CASES[request.param]
    qdir, _, _, _ = int4_checkpoint(tmp_path_factory.mktemp(request.param), method, group, desc_act=desc_act)
    return qdir


def ids(seed=0):
    return np.random.RandomState(seed).randint(0, 256, (2, 20)).astype(np.int32)


def test_s4_weights_and_logits_match_packed(ckpt, monkeypatch):
    monkeypatch.delenv("JAXLLM_INT4_LAYOUT", raising=False)
    packed = jaxllm.load_model(ckpt)
    monkeypatch.setenv("JAXLLM_INT4_LAYOUT", "s4")
    s4 = jaxllm.load_model(ckpt)
    for a, b in ((packed.layers[1].mlp.down, s4.layers[1].mlp.down),
                 (packed.layers[0].self_attn.q_proj, s4.layers[0].self_attn.q_proj)):
        assert a.layout == "packed" and b.layout == "s4" and b.qweight[...].dtype == jnp.uint8
        qa, qb = a.qweight[...], b.qweight[...]
        assert qb.shape == (8 * qa.shape[0], *qa.shape[1:-1], qa.shape[-1] // 2)  # 4 bits per weight either way
        np.testing.assert_allclose(np.asarray(dequantize_int4_weight(b, jnp.float32)),
                                   np.asarray(dequantize_int4_weight(a, jnp.float32)), rtol=1e-6, atol=1e-7)
    ref = np.asarray(packed(ids()))
    got = np.asarray(s4(ids()))
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    if len(jax.devices()) >= 2:
        tp2 = jaxllm.load_model(ckpt, tensor_parallel_size=2)
        assert tp2.layers[0].self_attn.o_proj.layout == "s4"
        assert np.abs(np.asarray(tp2(ids())) - ref).max() <= 1e-5 * np.abs(ref).max()


def test_engine_greedy_tokens_match_packed(ckpt, monkeypatch):
    prompts = [{"prompt_token_ids": list(range(1, n))} for n in (6, 17)]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, detokenize=False)
    tokens = {}
    for layout in ("packed", "s4"):
        monkeypatch.setenv("JAXLLM_INT4_LAYOUT", layout)
        llm = LLM(str(ckpt), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
                  enforce_eager=True)
        tokens[layout] = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert tokens["s4"] == tokens["packed"]


def test_bad_layout_fails_before_loading(ckpt, monkeypatch):
    monkeypatch.setenv("JAXLLM_INT4_LAYOUT", "nibbles")
    with pytest.raises(ValueError, match="JAXLLM_INT4_LAYOUT='nibbles' is not supported"):
        jaxllm.load_model(ckpt)


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")
def test_last_dim_shards_counts_the_pieces_of_the_packed_dim():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxllm.parallel.sharding import make_mesh
    from jaxllm.weights.int4_layout import _last_dim_shards

    mesh = make_mesh(4)
    axis = mesh.axis_names[0]
    assert _last_dim_shards(NamedSharding(mesh, P(None, axis)), (8, 8)) == 4
    assert _last_dim_shards(NamedSharding(mesh, P(axis)), (8, 8)) == 1  # trailing dims left out of the spec
    assert _last_dim_shards(NamedSharding(mesh, P(None, None, axis)), (8, 2, 8)) == 4
