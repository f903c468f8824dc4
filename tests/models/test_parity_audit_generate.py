"""Greedy ``LLM.generate`` on the paged engine equals transformers' greedy continuation on awkward configs of every
decoder family: chunked prefill (a 16-token budget over 8-token blocks), prompts longer than the sliding windows
and than yarn's original context, attention biases, head_dim independent of the hidden size, MQA, MoE layer
patterns; dynamic NTK rope switching per sequence as transformers' cached generation does."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import hf_cached_logprobs, hf_greedy, save_tiny_model

from jaxllm import LLM, SamplingParams

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)

CASES = {
    "llama-yarn-mqa": ("LlamaForCausalLM", {"rope_scaling": YARN, "num_key_value_heads": 1, "mlp_bias": True}),
    "mistral-headdim-window": ("MistralForCausalLM", {"head_dim": 32, "sliding_window": 5}),
    "qwen2-windowed-layers-yarn": ("Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 6,
                                                        "max_window_layers": 1, "rope_scaling": YARN}),
    "qwen3-bias-window": ("Qwen3ForCausalLM", {"attention_bias": True, "head_dim": 8, "use_sliding_window": True,
                                               "sliding_window": 5, "max_window_layers": 0}),
    "gemma-bias": ("GemmaForCausalLM", {"attention_bias": True, "head_dim": 16, "num_key_value_heads": 1}),
    "gemma2-bias-window": ("Gemma2ForCausalLM", {"attention_bias": True, "head_dim": 16, "sliding_window": 5,
                                                 "final_logit_softcapping": None}),
    "gemma3-yarn-layer-types": ("Gemma3ForCausalLM", {"head_dim": 16, "sliding_window": 5, "rope_scaling": YARN,
                                                      "layer_types": ["full_attention", "sliding_attention"],
                                                      "attention_bias": True}),
    "phi3-partial-window": ("Phi3ForCausalLM", {**SPECIAL, "partial_rotary_factor": 0.5, "sliding_window": 7,
                                                "num_key_value_heads": 1}),
    "olmo2-bias-headdim": ("Olmo2ForCausalLM", {**SPECIAL, "attention_bias": True, "head_dim": 32}),
    "mixtral-window-top1": ("MixtralForCausalLM", {"num_local_experts": 3, "num_experts_per_tok": 1,
                                                   "sliding_window": 6}),
    "qwen3moe-step-mlp-only-window": ("Qwen3MoeForCausalLM", {**MOE, "num_hidden_layers": 3, "decoder_sparse_step": 2,
                                                              "mlp_only_layers": [2], "norm_topk_prob": False,
                                                              "use_sliding_window": True, "sliding_window": 6}),
}


def prompts(n, lo, hi, seed):
    rng = np.random.RandomState(seed)
    return [[int(t) for t in rng.randint(3, 256, rng.randint(lo, hi))] for _ in range(n)]


def generate(llm, batch):
    outs = llm.generate([{"prompt_token_ids": p} for p in batch], GREEDY, use_tqdm=False)
    return [out.outputs[0].token_ids for out in outs]


@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_chunked_prefill(tmp_path, case):
    arch, overrides = CASES[case]
    hf = save_tiny_model(tmp_path, arch, **overrides)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=16, block_size=8,
              enforce_eager=True)
    batch = prompts(3, 8, 30, seed=1)
    assert generate(llm, batch) == [hf_greedy(hf, p, GREEDY.max_tokens) for p in batch]


def check_cached_logprobs(llm, hf, batch, params) -> None:
    """Greedy tokens equal, and their logprobs within 1e-4 of, transformers' cached generation of each prompt."""
    outs = llm.generate([{"prompt_token_ids": p} for p in batch], params, use_tqdm=False)
    for p, out in zip(batch, outs):
        ids, rows = hf_cached_logprobs(hf, p, params.max_tokens)
        comp = out.outputs[0]
        assert comp.token_ids == ids
        assert max(abs(lp[t].logprob - row[t]) for t, lp, row in zip(ids, comp.logprobs, rows)) < 1e-4


def test_dynamic_rope_grows_per_sequence(tmp_path):
    """Dynamic NTK past max_position_embeddings (16): each sequence's rope base follows its own length, so a
    sequence that crosses 16 tokens while generating matches transformers' cached generation of it alone
    (tokens and logprobs), and a short one batched with it is not affected by its length."""
    hf = save_tiny_model(tmp_path, "LlamaForCausalLM", rope_scaling={"rope_type": "dynamic", "factor": 2.0},
                         max_position_embeddings=16)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=32,
              enforce_eager=True)
    assert llm.engine_args.max_model_len == 32  # max_position_embeddings * factor, as vLLM
    batch = prompts(2, 12, 16, seed=3) + [[5, 6, 7]]
    params = SamplingParams(temperature=0.0, max_tokens=12, logprobs=0, ignore_eos=True)
    check_cached_logprobs(llm, hf, batch, params)


LONGROPE = {"rope_type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(8)],
            "long_factor": [2.0 + 0.5 * i for i in range(8)], "original_max_position_embeddings": 24}
LONG_PROMPTS = {
    "phi3-longrope": ("Phi3ForCausalLM", {**SPECIAL, "rope_scaling": LONGROPE, "original_max_position_embeddings": 24,
                                          "max_position_embeddings": 96}, (26, 41)),
    "llama-dynamic": ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
                                           "max_position_embeddings": 16}, (18, 24)),
}


@pytest.mark.parametrize("case", sorted(LONG_PROMPTS))
def test_prompt_beyond_original_length_in_chunks(tmp_path, case):
    """A prompt longer than the rope's original length, prefilled in 16-token chunks: every chunk is rotated
    for the whole prompt's length, as transformers rotates the prompt in one forward (logprobs within 1e-4)."""
    arch, overrides, (lo, hi) = LONG_PROMPTS[case]
    hf = save_tiny_model(tmp_path, arch, **overrides)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=16, block_size=8,
              enforce_eager=True)
    batch = prompts(3, lo, hi, seed=4)
    params = SamplingParams(temperature=0.0, max_tokens=6, logprobs=0, ignore_eos=True)
    check_cached_logprobs(llm, hf, batch, params)
