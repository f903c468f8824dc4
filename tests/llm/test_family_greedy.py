"""Greedy LLM.generate on the paged engine equals transformers' greedy continuation for Gemma 1/2/3, Phi-3,
OLMo 2, Granite, SmolLM3, Starcoder2, Cohere, Qwen2-MoE, OLMoE, GPT-2, GPT-NeoX, Phi, StableLM, OPT, GPT-J, OLMo,
GLM / GLM-4, Nemotron, Cohere2, Ernie 4.5, EXAONE 4, OLMo 3, Seed-OSS and Falcon: chunked prefill (a 16-token budget), prompts
longer than the sliding windows, prefix caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_models import DENSE3_ENGINE_CASES, hf_greedy, save_tiny_model

from jaxllm import LLM, SamplingParams

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
LONGROPE = {"rope_type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(8)],
            "long_factor": [2.0 + 0.5 * i for i in range(8)], "original_max_position_embeddings": 24}

FAMILIES = {
    "gemma": ("GemmaForCausalLM", {"head_dim": 16}),
    "gemma2": ("Gemma2ForCausalLM", {"head_dim": 16, "sliding_window": 6, "attn_logit_softcapping": 2.0,
                                     "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 24}),
    "gemma3": ("Gemma3ForCausalLM", {"head_dim": 16, "sliding_window": 5, "num_hidden_layers": 3,
                                     "sliding_window_pattern": 3, "rope_local_base_freq": 100.0,
                                     "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "phi3-window": ("Phi3ForCausalLM", {**SPECIAL, "sliding_window": 7}),
    "olmo2": ("Olmo2ForCausalLM", SPECIAL),
    "granite": ("GraniteForCausalLM", {**SPECIAL, "embedding_multiplier": 6.0, "residual_multiplier": 0.3,
                                       "attention_multiplier": 0.05, "logits_scaling": 4.0}),
    "smollm3-window": ("SmolLM3ForCausalLM", {**SPECIAL, "no_rope_layers": [1, 0], "use_sliding_window": True,
                                              "sliding_window": 7}),
    "starcoder2-window": ("Starcoder2ForCausalLM", {**SPECIAL, "sliding_window": 6}),
    "cohere-qk-norm": ("CohereForCausalLM", {**SPECIAL, "use_qk_norm": True, "logit_scale": 0.3}),
    "qwen2moe-shared-window": ("Qwen2MoeForCausalLM", {**SPECIAL, "num_experts": 8, "num_experts_per_tok": 2,
                                                       "moe_intermediate_size": 16, "shared_expert_intermediate_size": 48,
                                                       "use_sliding_window": True, "sliding_window": 6}),
    "gpt2": ("GPT2LMHeadModel", {**SPECIAL, "max_position_embeddings": 64}),
    "gpt-neox": ("GPTNeoXForCausalLM", {**SPECIAL, "rotary_pct": 0.5}),
    "phi-qk-layernorm": ("PhiForCausalLM", {**SPECIAL, "qk_layernorm": True}),
    "stablelm-parallel-qk-norm": ("StableLmForCausalLM", {**SPECIAL, "use_parallel_residual": True,
                                                          "qk_layernorm": True, "use_qkv_bias": True}),
    "opt-post-norm-projected": ("OPTForCausalLM", {**SPECIAL, "do_layer_norm_before": False,
                                                   "word_embed_proj_dim": 32}),
    "olmoe-clip": ("OlmoeForCausalLM", {**SPECIAL, "num_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 32,
                                        "clip_qkv": 0.5}),
    **DENSE3_ENGINE_CASES,
    "glm": ("GlmForCausalLM", {**SPECIAL, "head_dim": 16}),
    "falcon-multi-query": ("FalconForCausalLM", SPECIAL),
}
GREEDY = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)


def prompts(n, lo, hi, seed):
    rng = np.random.RandomState(seed)
    return [[int(t) for t in rng.randint(3, 256, rng.randint(lo, hi))] for _ in range(n)]


def hf_greedy_cached(model, prompt_ids, num_tokens):
    """Greedy continuation through transformers' KV cache: every call sees the sequence's length so far (the
    per-call rope switch of longrope then matches the engine's per-sequence one)."""
    with torch.no_grad():
        out = model(torch.tensor([prompt_ids]), use_cache=True)
        ids = [int(out.logits[0, -1].argmax())]
        for _ in range(num_tokens - 1):
            out = model(torch.tensor([[ids[-1]]]), past_key_values=out.past_key_values, use_cache=True)
            ids.append(int(out.logits[0, -1].argmax()))
    return ids


def check(llm, hf, batch, reference=hf_greedy):
    outs = llm.generate([{"prompt_token_ids": p} for p in batch], GREEDY, use_tqdm=False)
    for p, out in zip(batch, outs):
        assert out.outputs[0].token_ids == reference(hf, p, GREEDY.max_tokens), p
    return outs


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_chunked_prefill_and_prefix_cache(tmp_path, family):
    arch, overrides = FAMILIES[family]
    hf = save_tiny_model(tmp_path, arch, **overrides)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=16, block_size=8,
              enforce_eager=True)
    check(llm, hf, prompts(4, 8, 30, seed=1))
    shared = prompts(1, 20, 21, seed=2)[0]
    check(llm, hf, [shared + [7, 8]])
    again = check(llm, hf, [shared + [9, 10, 11]])
    assert again[0].num_cached_tokens == 16  # two full blocks of 8


def test_longrope_switches_per_sequence_like_transformers_cache(tmp_path):
    """Prompts shorter than original_max_position_embeddings (24) whose generation crosses it: the long
    factors take over at the step where the sequence passes 24 tokens, for that sequence only."""
    hf = save_tiny_model(tmp_path, "Phi3ForCausalLM", **SPECIAL, rope_scaling=LONGROPE,
                         original_max_position_embeddings=24, max_position_embeddings=96)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=32,
              enforce_eager=True)
    check(llm, hf, prompts(3, 16, 22, seed=3) + [[5, 6, 7]], reference=hf_greedy_cached)
