"""Tiny random HF checkpoints built in the tests (no downloads), saved with safetensors."""

from __future__ import annotations

import os

import numpy as np
import torch
import transformers

TINY = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 512}


# multi-head-only families: their spelling of the tiny dims (GPT-2's n_inner, OPT's ffn_dim)
_MHA_ONLY = {
    "GPT2LMHeadModel": lambda kw: {**{k: v for k, v in kw.items() if k != "intermediate_size"},
                                   "n_inner": kw["intermediate_size"]},
    "GPTNeoXForCausalLM": lambda kw: kw,
    "GPTJForCausalLM": lambda kw: {**{k: v for k, v in kw.items() if k != "intermediate_size"},
                                   "n_inner": kw["intermediate_size"], "rotary_dim": 8},
    "FalconForCausalLM": lambda kw: {**{k: v for k, v in kw.items() if k != "intermediate_size"},
                                     "ffn_hidden_size": kw["intermediate_size"]},
    "OPTForCausalLM": lambda kw: {**{k: v for k, v in kw.items() if k != "intermediate_size"},
                                  "ffn_dim": kw["intermediate_size"]},
}

_SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}  # ids inside the tiny vocabulary
# GPT-J, OLMo, GLM-4, Nemotron, Cohere2, Ernie 4.5, EXAONE 4, OLMo 3, Seed-OSS and Falcon on the engine: the rows
# tests/llm/test_family_greedy.py and tests/parallel/test_tensor_parallel.py share (logits parity of every
# variant: tests/models/test_parity_families3.py)
DENSE3_ENGINE_CASES = {
    "gptj": ("GPTJForCausalLM", _SPECIAL),
    "olmo-clip": ("OlmoForCausalLM", {**_SPECIAL, "clip_qkv": 0.5, "attention_bias": True}),
    "glm4": ("Glm4ForCausalLM", {**_SPECIAL, "head_dim": 16}),
    "nemotron-biases": ("NemotronForCausalLM", {**_SPECIAL, "attention_bias": True, "mlp_bias": True}),
    "cohere2-window": ("Cohere2ForCausalLM", {**_SPECIAL, "num_hidden_layers": 4, "sliding_window": 6}),
    "ernie4_5-bias": ("Ernie4_5ForCausalLM", {**_SPECIAL, "head_dim": 16, "use_bias": True}),
    "exaone4-window": ("Exaone4ForCausalLM", {**_SPECIAL, "num_hidden_layers": 4, "sliding_window": 6}),
    "olmo3-window": ("Olmo3ForCausalLM", {**_SPECIAL, "num_hidden_layers": 4, "sliding_window": 6,
                                          "rope_theta": 1000.0}),
    "seed-oss": ("SeedOssForCausalLM", {**_SPECIAL, "head_dim": 16, "attention_out_bias": True}),
    "falcon-new-gqa-bias": ("FalconForCausalLM", {**_SPECIAL, "new_decoder_architecture": True, "num_kv_heads": 2,
                                                  "bias": True}),
}


def make_config(arch: str, **overrides):
    """A transformers config of ``arch`` with tiny dims (GQA 4/2 heads by default)."""
    if arch.startswith("Deepseek"):  # (MLA and DeepSeek-MoE dims of their own)
        from deepseek_models import TINY as DEEPSEEK_TINY

        return getattr(transformers, arch.replace("ForCausalLM", "Config"))(**{**DEEPSEEK_TINY, **overrides})
    if arch == "GptOssForCausalLM":  # (sinks, alternating windows and its MoE: dims of its own)
        from models.gpt_oss_cases import GPT_OSS_TINY

        return transformers.GptOssConfig(**{**GPT_OSS_TINY, **overrides})
    kw = {**TINY, **overrides}
    if arch in _MHA_ONLY:  # (these families have no num_key_value_heads; a stray one would be read by jaxllm)
        kw.pop("num_key_value_heads")
        kw = {**_MHA_ONLY[arch](kw), **overrides}
    cls = {
        "LlamaForCausalLM": transformers.LlamaConfig,
        "MistralForCausalLM": transformers.MistralConfig,
        "Qwen2ForCausalLM": transformers.Qwen2Config,
        "Qwen3ForCausalLM": transformers.Qwen3Config,
        "GemmaForCausalLM": transformers.GemmaConfig,
        "Gemma2ForCausalLM": transformers.Gemma2Config,
        "Gemma3ForCausalLM": transformers.Gemma3TextConfig,
        "Phi3ForCausalLM": transformers.Phi3Config,
        "Olmo2ForCausalLM": transformers.Olmo2Config,
        "MixtralForCausalLM": transformers.MixtralConfig,
        "Qwen3MoeForCausalLM": transformers.Qwen3MoeConfig,
        "Qwen2MoeForCausalLM": transformers.Qwen2MoeConfig,
        "OlmoeForCausalLM": transformers.OlmoeConfig,
        "GraniteForCausalLM": transformers.GraniteConfig,
        "SmolLM3ForCausalLM": transformers.SmolLM3Config,
        "Starcoder2ForCausalLM": transformers.Starcoder2Config,
        "CohereForCausalLM": transformers.CohereConfig,
        "GPT2LMHeadModel": transformers.GPT2Config,
        "GPTNeoXForCausalLM": transformers.GPTNeoXConfig,
        "PhiForCausalLM": transformers.PhiConfig,
        "StableLmForCausalLM": transformers.StableLmConfig,
        "OPTForCausalLM": transformers.OPTConfig,
        "GPTJForCausalLM": transformers.GPTJConfig,
        "OlmoForCausalLM": transformers.OlmoConfig,
        "GlmForCausalLM": transformers.GlmConfig,
        "Glm4ForCausalLM": transformers.Glm4Config,
        "NemotronForCausalLM": transformers.NemotronConfig,
        "Cohere2ForCausalLM": transformers.Cohere2Config,
        "Ernie4_5ForCausalLM": transformers.Ernie4_5Config,
        "Exaone4ForCausalLM": transformers.Exaone4Config,
        "Olmo3ForCausalLM": transformers.Olmo3Config,
        "SeedOssForCausalLM": transformers.SeedOssConfig,
        "FalconForCausalLM": transformers.FalconConfig,
        "GraniteMoeForCausalLM": transformers.GraniteMoeConfig,
        "GraniteMoeSharedForCausalLM": transformers.GraniteMoeSharedConfig,
        "PhimoeForCausalLM": transformers.PhimoeConfig,
        "Ernie4_5_MoeForCausalLM": transformers.Ernie4_5_MoeConfig,
    }[arch]
    cfg = cls(**kw)
    cfg.architectures = [arch]
    return cfg


def save_tiny_model(path, arch: str, seed: int = 0, max_shard_size=None, dtype=torch.float32, **overrides):
    """Build a random HF model, save it (safetensors) to ``path`` and return the torch model (fp32, eval)."""
    torch.manual_seed(seed)
    cfg = make_config(arch, **overrides)
    model = getattr(transformers, arch)(cfg).to(dtype).eval()
    # Random norms and biases too, so that a wrongly mapped one cannot hide behind ones/zeros (Gemma's norms
    # scale by 1 + w and start at w = 0).
    gemma = arch.startswith("Gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:  # (GPT-2's ln_1 / ln_2 / ln_f)
                p.copy_((0.0 if gemma else 1.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith("mlp.gate.weight"):  # MoE router: well-separated, non-uniform routing
                p.copy_(torch.randn_like(p))
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(os.fspath(path), **kwargs)
    return model


_SESSION_CHECKPOINTS: dict = {}


def session_checkpoint(tmp_path_factory, save, name: str, first, **overrides):
    """(path, model) of ``save(path, first, **overrides)`` (save_tiny_model, save_deepseek, save_moe_model, ...),
    built once per test session for each (save, first, overrides) and saved under a folder named ``name``."""
    key = (save, first, repr(sorted(overrides.items())))
    if key not in _SESSION_CHECKPOINTS:
        path = tmp_path_factory.mktemp(name)
        _SESSION_CHECKPOINTS[key] = path, save(path, first, **overrides)
    return _SESSION_CHECKPOINTS[key]


def hf_logits(model, ids) -> np.ndarray:
    """transformers' float32 logits [B, T, V] of int ids [B, T]."""
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.numpy()


def relative_error(ours, ref) -> float:
    """max |ours - ref| / max |ref| (the parity tests' measure)."""
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def check_logits(path, arch: str, **overrides) -> None:
    """Save a tiny random ``arch`` checkpoint (``overrides`` on its config) to ``path``: jaxllm.load_model's
    float32 logits [2, 24, V] are within 1e-4 relative of transformers'."""
    import jaxllm

    hf = save_tiny_model(path, arch, **overrides)
    model = jaxllm.load_model(path)
    ids = np.random.RandomState(1).randint(0, hf.config.vocab_size, (2, 24)).astype(np.int32)
    logits = np.asarray(model(ids))
    assert logits.shape == (2, 24, hf.config.vocab_size) and logits.dtype == np.float32
    assert relative_error(logits, hf_logits(hf, ids)) <= 1e-4


def hf_greedy(model, prompt_ids: list[int], num_tokens: int) -> list[int]:
    """Greedy continuation with transformers, never stopping early (like ignore_eos=True)."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(num_tokens):
            logits = model(torch.tensor([ids], dtype=torch.long), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def hf_cached_logprobs(model, prompt_ids, num_tokens):
    """Greedy continuation through transformers' KV cache (each call's rope sees the sequence's length so far):
    (token ids, log_softmax rows [num_tokens, V])."""
    rows, ids = [], []
    with torch.no_grad():
        model(torch.tensor([prompt_ids[:1]]))  # a short call resets a grown dynamic rope (its state spans calls)
        out = model(torch.tensor([prompt_ids]), use_cache=True)
        for _ in range(num_tokens):
            rows.append(torch.log_softmax(out.logits[0, -1].float(), -1).numpy())
            ids.append(int(rows[-1].argmax()))
            out = model(torch.tensor([[ids[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return ids, np.stack(rows)


def hf_logprobs(model, token_ids: list[int]) -> torch.Tensor:
    """log_softmax of the logits at every position of ``token_ids`` ([T, V], float32)."""
    with torch.no_grad():
        logits = model(torch.tensor([token_ids], dtype=torch.long)).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def save_tokenizer_with_template(path) -> None:
    """Save the tests' tiny byte-level BPE tokenizer (tests/engine/bpe_tokenizer.py) with a chat template."""
    from engine.bpe_tokenizer import bpe_tokenizer

    tok = bpe_tokenizer()
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    tok.save_pretrained(str(path))


def check_greedy_prefix_cache(llm, hf, max_tokens: int = 8) -> None:
    """Greedy ``llm.generate`` (an LLM with block_size 8, prefix caching and a small token budget, so prompts
    prefill in chunks) token-identical to transformers on prompts of 5 / 27 / 11 / 22 tokens, then a prompt
    sharing 20 tokens with the last one: two full cached blocks, same tokens."""
    from jaxllm import SamplingParams

    greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    rng = np.random.RandomState(4)
    shared = [int(t) for t in rng.randint(3, 256, 20)]
    batch = [[int(t) for t in rng.randint(3, 256, n)] for n in (5, 27, 11)] + [shared + [7, 8]]
    outs = llm.generate([{"prompt_token_ids": p} for p in batch], greedy, use_tqdm=False)
    for p, out in zip(batch, outs):
        assert out.outputs[0].token_ids == hf_greedy(hf, p, max_tokens)
    again = llm.generate([{"prompt_token_ids": shared + [9, 10, 11]}], greedy, use_tqdm=False)[0]
    assert again.num_cached_tokens == 16  # two full blocks of 8
    assert again.outputs[0].token_ids == hf_greedy(hf, shared + [9, 10, 11], max_tokens)
