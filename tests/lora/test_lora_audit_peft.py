"""LoRA audit against PEFT: adapter variants (rank 1, float alpha, rsLoRA, ``layers_to_transform``,
``target_modules="all-linear"``, full module paths) and the decoder families beside Llama (Qwen2's qkv biases
and tied embeddings, Qwen3's and Olmo2's q/k norms, Gemma2's soft-capping, Gemma3's sliding windows, Phi3's fused
projections) give PEFT's merged
model's greedy tokens and prompt logprobs; a batch mixing the base model and several adapters equals each
prompt run alone."""

from __future__ import annotations

import numpy as np
import peft
import pytest
import torch
from hf_models import hf_greedy, hf_logprobs, save_tiny_model
from lora_adapters import save_peft_adapter

from jaxllm import LLM, SamplingParams
from jaxllm.lora import LoRARequest

NUM_TOKENS = 5
GREEDY = SamplingParams(temperature=0, max_tokens=NUM_TOKENS, ignore_eos=True)
PROMPTS = [[7, 3, 90, 41, 12, 5, 77, 23, 64, 9, 150, 31], [200, 4, 18, 6], [33] * 3 + [81, 17] * 9]


def make_llm(path, **kwargs):
    args = {"skip_tokenizer_init": True, "max_num_seqs": 8, "max_num_batched_tokens": 64, "enforce_eager": True,
            "enable_lora": True, "max_loras": 4, "max_lora_rank": 8}
    return LLM(str(path), **{**args, **kwargs})


def check_against_peft(llm, plan, requests, refs, prompts=PROMPTS):
    """``plan``: the adapter name of each prompt (None: the base model); greedy tokens and prompt logprobs of
    one mixed batch equal those of PEFT's merged model of each prompt."""
    prompts = [prompts[i % len(prompts)] for i in range(len(plan))]
    loras = [requests[a] for a in plan]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], GREEDY, lora_request=loras, use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == [hf_greedy(refs[a], p, NUM_TOKENS)
                                                          for a, p in zip(plan, prompts)]
    lp = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], lp, lora_request=loras, use_tqdm=False)
    for out, adapter, prompt in zip(outs, plan, prompts):
        ref = hf_logprobs(refs[adapter], prompt).numpy()
        got = [next(iter(d.values())).logprob for d in out.prompt_logprobs[1:]]
        np.testing.assert_allclose(got, [ref[i, prompt[i + 1]] for i in range(len(prompt) - 1)], atol=3e-4)


def save_adapter(base_dir, out_dir, seed, **config):
    """A PEFT adapter built from a full ``peft.LoraConfig`` (options the shared helper does not take); returns
    the merged reference model."""
    import transformers

    torch.manual_seed(seed)
    base = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = peft.get_peft_model(base, peft.LoraConfig(lora_dropout=0.0, **config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn_like(p))
    model.save_pretrained(str(out_dir))
    return model.merge_and_unload().eval()


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_audit")
    base = save_tiny_model(root / "base", "LlamaForCausalLM")
    refs, requests = {None: base}, {None: None}
    variants = {
        "rank1": {"r": 1, "lora_alpha": 3, "target_modules": ["q_proj", "down_proj"]},
        "float-alpha": {"r": 8, "lora_alpha": 5.5, "target_modules": ["k_proj", "o_proj", "up_proj"]},
        "rslora": {"r": 4, "lora_alpha": 6, "use_rslora": True, "target_modules": ["v_proj", "gate_proj"]},
        "layer1": {"r": 8, "lora_alpha": 16, "layers_to_transform": [1],
                   "target_modules": ["q_proj", "v_proj", "gate_proj", "down_proj"]},
        "all-linear": {"r": 2, "lora_alpha": 4, "target_modules": "all-linear"},
        "paths": {"r": 8, "lora_alpha": 8, "target_modules": ["model.layers.0.self_attn.q_proj",
                                                              "model.layers.1.mlp.up_proj"]},
    }
    for i, (name, config) in enumerate(variants.items()):
        refs[name] = save_adapter(root / "base", root / name, seed=i + 10, **config)
        requests[name] = LoRARequest(name, i + 1, str(root / name))
    return root, refs, requests


def test_adapter_variants_match_peft(llama):
    root, refs, requests = llama
    llm = make_llm(root / "base", max_loras=4, max_cpu_loras=6)
    names = [n for n in requests if n is not None]
    base = hf_logprobs(refs[None], PROMPTS[0])
    assert all((hf_logprobs(refs[n], PROMPTS[0]) - base).abs().max() > 0.05 for n in names)  # each one counts
    check_against_peft(llm, names + [None], requests, refs)  # six adapters through four slots


def test_mixed_batch_equals_each_prompt_alone(llama):
    """vLLM's guarantee: a request's result does not depend on what shares its batch."""
    root, _, requests = llama
    llm = make_llm(root / "base")
    plan = ["rank1", None, "rslora", "layer1", "rank1", None]
    prompts = [{"prompt_token_ids": PROMPTS[i % 3]} for i in range(len(plan))]
    params = SamplingParams(temperature=0, max_tokens=NUM_TOKENS, ignore_eos=True, logprobs=2)
    mixed = llm.generate(prompts, params, lora_request=[requests[a] for a in plan], use_tqdm=False)
    for prompt, adapter, out in zip(prompts, plan, mixed):
        alone = llm.generate([prompt], params, lora_request=requests[adapter], use_tqdm=False)[0]
        assert list(alone.outputs[0].token_ids) == list(out.outputs[0].token_ids)
        assert alone.lora_request == out.lora_request == requests[adapter]
        for a, b in zip(alone.outputs[0].logprobs, out.outputs[0].logprobs):
            assert a.keys() == b.keys()
            np.testing.assert_allclose([x.logprob for x in a.values()], [x.logprob for x in b.values()], atol=1e-5)


FAMILIES = {  # arch: (config overrides, PEFT target modules)
    "Qwen2ForCausalLM": ({"tie_word_embeddings": True}, ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]),
    "Qwen3ForCausalLM": ({"head_dim": 16}, ["q_proj", "k_proj", "gate_proj", "up_proj"]),
    "Gemma2ForCausalLM": ({"head_dim": 16}, ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]),
    "Gemma3ForCausalLM": ({"head_dim": 16, "sliding_window": 8}, ["k_proj", "v_proj", "up_proj"]),
    "Olmo2ForCausalLM": ({}, ["q_proj", "k_proj", "o_proj", "gate_proj"]),
    "Phi3ForCausalLM": ({"pad_token_id": 0}, ["o_proj", "down_proj"]),  # the fused qkv / gate_up: see below
}


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_families_match_peft(tmp_path, arch):
    overrides, targets = FAMILIES[arch]
    base = save_tiny_model(tmp_path / "base", arch, **overrides)
    refs = {None: base, "a": save_peft_adapter(tmp_path / "base", tmp_path / "a", r=8, alpha=16, targets=targets,
                                               seed=1)}
    requests = {None: None, "a": LoRARequest("a", 1, str(tmp_path / "a"))}
    llm = make_llm(tmp_path / "base", max_loras=1)
    check_against_peft(llm, ["a", None, "a"], requests, refs)


def test_phi3_fused_projections_are_a_clear_error(tmp_path):
    """Phi3 checkpoints fuse q/k/v (qkv_proj) and gate/up (gate_up_proj); adapters on them are refused by name
    (vLLM's packed-module LoRA is not implemented), before any device work."""
    save_tiny_model(tmp_path / "base", "Phi3ForCausalLM", pad_token_id=0)
    save_peft_adapter(tmp_path / "base", tmp_path / "qkv", r=8, alpha=16, targets=["qkv_proj", "o_proj"])
    llm = make_llm(tmp_path / "base", max_loras=1)
    with pytest.raises(ValueError, match="qkv_proj"):
        llm.generate([{"prompt_token_ids": [1, 2, 3]}], GREEDY, lora_request=LoRARequest("qkv", 1,
                                                                                         str(tmp_path / "qkv")))
    assert not llm.llm_engine.has_unfinished_requests()


def test_seeded_sampling_with_adapters_equals_each_prompt_alone(llama):
    """Seeded sampling (n=2) under adapters: a request's samples do not depend on the adapters beside it."""
    root, _, requests = llama
    llm = make_llm(root / "base", max_loras=2)
    plan = ["float-alpha", "all-linear", None, "paths"]
    prompts = [{"prompt_token_ids": PROMPTS[i % 3]} for i in range(len(plan))]
    params = SamplingParams(temperature=1.0, seed=7, n=2, max_tokens=NUM_TOKENS, ignore_eos=True)
    mixed = llm.generate(prompts, params, lora_request=[requests[a] for a in plan], use_tqdm=False)
    for prompt, adapter, out in zip(prompts, plan, mixed):
        alone = llm.generate([prompt], params, lora_request=requests[adapter], use_tqdm=False)[0]
        assert [list(c.token_ids) for c in alone.outputs] == [list(c.token_ids) for c in out.outputs]
