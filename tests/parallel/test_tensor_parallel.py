"""Tensor parallelism on 4 fake CPU devices (tests/conftest.py sets XLA_FLAGS): TP=2 and TP=4 logits within
fp32 tolerance of TP=1 and identical greedy tokens, for GQA models including one with TP > kv heads, and every
model family."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hf_models import DENSE3_ENGINE_CASES, save_tiny_model

import jaxllm
from jaxllm import LLM, SamplingParams

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}  # ids inside the tiny vocabulary
CASES = {
    "llama-gqa-4q-2kv": ("LlamaForCausalLM", {}),  # TP=4 > 2 kv heads: kv heads replicated
    "qwen3-gqa-8q-4kv": ("Qwen3ForCausalLM", {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 16}),
    "qwen2-bias-4q-1kv": ("Qwen2ForCausalLM", {"num_key_value_heads": 1}),
    # Phi-3's fused qkv_proj split into sharded q/k/v; OLMo 2's q/k norms over sharded heads; Gemma's soft-caps,
    # windows and local/global layers
    "gemma-mqa": ("GemmaForCausalLM", {"head_dim": 16, "num_key_value_heads": 1}),
    "gemma2-softcap-window": ("Gemma2ForCausalLM", {"head_dim": 16, "sliding_window": 6,
                                                    "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
    "gemma3-local-global": ("Gemma3ForCausalLM", {"head_dim": 16, "sliding_window": 5, "sliding_window_pattern": 2}),
    "phi3-fused-8q-4kv": ("Phi3ForCausalLM", {"num_attention_heads": 8, "num_key_value_heads": 4, **SPECIAL}),
    "olmo2-full-qk-norm": ("Olmo2ForCausalLM", SPECIAL),
    # Granite's multipliers; SmolLM3's no-rope layers with their sliding windows
    "granite-multipliers": ("GraniteForCausalLM", {**SPECIAL, "embedding_multiplier": 6.0, "residual_multiplier": 0.3,
                                                   "attention_multiplier": 0.05, "logits_scaling": 4.0}),
    "smollm3-no-rope-window": ("SmolLM3ForCausalLM", {**SPECIAL, "no_rope_layers": [1, 0], "use_sliding_window": True,
                                                      "sliding_window": 6}),
    # LayerNorms with biases and the plain MLP; Cohere's parallel block and per-head q/k norms over sharded heads
    "starcoder2-window": ("Starcoder2ForCausalLM", {**SPECIAL, "sliding_window": 6}),
    "cohere-qk-norm": ("CohereForCausalLM", {**SPECIAL, "use_qk_norm": True}),
    # learned positions, fused c_attn / query_key_value split into sharded heads, biases over sharded heads and
    # the sharded vocab (Phi's lm_head bias), OPT's projected embeddings
    "gpt2": ("GPT2LMHeadModel", {**SPECIAL, "max_position_embeddings": 64}),
    "gpt-neox": ("GPTNeoXForCausalLM", SPECIAL),
    "phi-qk-layernorm": ("PhiForCausalLM", {**SPECIAL, "qk_layernorm": True}),
    "stablelm-qk-norm": ("StableLmForCausalLM", {**SPECIAL, "qk_layernorm": True, "use_qkv_bias": True}),
    "opt-projected": ("OPTForCausalLM", {**SPECIAL, "word_embed_proj_dim": 32}),
    **DENSE3_ENGINE_CASES,
}


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    arch, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    save_tiny_model(path, arch, **overrides)
    return path


def test_dense_logits_match_tp1(checkpoint):
    ids = (np.arange(40, dtype=np.int32).reshape(2, 20) * 7) % 256
    ref = np.asarray(jaxllm.load_model(checkpoint)(ids))
    for tp in (2, 4):
        model = jaxllm.load_model(checkpoint, tensor_parallel_size=tp)
        mlp = model.layers[0].mlp
        up = mlp.c_fc if hasattr(mlp, "c_fc") else mlp.gate_up  # (Starcoder2's plain MLP)
        assert up[...].sharding.mesh.devices.size == tp
        out = np.asarray(model(ids))
        assert np.abs(out - ref).max() / np.abs(ref).max() <= 1e-5


def test_engine_greedy_tokens_match_tp1(checkpoint):
    prompts = [{"prompt_token_ids": list(range(1, n))} for n in (30, 8, 17)]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)

    def run(tp):
        llm = LLM(str(checkpoint), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
                  enforce_eager=True, tensor_parallel_size=tp)
        cache = llm.llm_engine.runner.kv_caches[0]
        kv_heads = llm.model_config.num_kv_heads
        # the cache is split over devices by head slot; with tp > kv heads each device holds one slot
        assert cache.shape[3] == max(kv_heads, tp if kv_heads % tp else kv_heads)
        assert {s.data.shape[3] for s in cache.addressable_shards} == {cache.shape[3] // tp}
        return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]

    base = run(1)
    assert run(2) == base
    assert run(4) == base


def test_invalid_tensor_parallel_size_is_clear_before_loading(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM", num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(ValueError, match="tensor_parallel_size=3 does not divide num_attention_heads=4"):
        jaxllm.load_model(tmp_path, tensor_parallel_size=3)
    with pytest.raises(ValueError, match="tensor_parallel_size=8 exceeds"):
        jaxllm.load_model(tmp_path, tensor_parallel_size=8)
