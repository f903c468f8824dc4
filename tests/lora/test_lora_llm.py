"""Multi-LoRA through ``LLM.generate``: several PEFT adapters and the base model mixed in one batch give PEFT's
merged models' greedy tokens and prompt logprobs; more adapters than slots (LRU swapping) give the same; the
prefix cache never shares blocks between adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from hf_models import hf_greedy, hf_logprobs, save_tiny_model
from lora_adapters import save_peft_adapter

from jaxllm import LLM, SamplingParams
from jaxllm.lora import LoRARequest
from jaxllm.sampling_params import BeamSearchParams

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTERS = {  # name: (r, alpha, targets, use_rslora)
    "all8": (8, 16, ALL, False),
    "qv4-rslora": (4, 8, ("q_proj", "v_proj"), True),
    "mlp16": (16, 32, ("gate_proj", "up_proj", "down_proj", "o_proj"), False),
}
PROMPTS = [list(range(3, 3 + n)) for n in (21, 7, 13, 30, 9)]
# adapter of each prompt (None: the base model); "all8" twice, so two sequences share a slot
PLAN = ["all8", None, "qv4-rslora", "mlp16", "all8"]
NUM_TOKENS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    base = save_tiny_model(root / "base", "LlamaForCausalLM")
    refs, requests = {None: base}, {None: None}
    for i, (name, (r, alpha, targets, rslora)) in enumerate(ADAPTERS.items()):
        refs[name] = save_peft_adapter(root / "base", root / name, r=r, alpha=alpha, targets=targets,
                                       use_rslora=rslora, seed=i + 1)
        requests[name] = LoRARequest(name, i + 1, str(root / name))
    expected = [hf_greedy(refs[a], p, NUM_TOKENS) for a, p in zip(PLAN, PROMPTS)]
    return root, refs, requests, expected


def make_llm(root, **kwargs):
    args = {"skip_tokenizer_init": True, "max_num_seqs": 8, "max_num_batched_tokens": 64, "enforce_eager": True,
                "enable_lora": True, "max_loras": 3, "max_lora_rank": 16}
    return LLM(str(root / "base"), **{**args, **kwargs})


GREEDY = SamplingParams(temperature=0, max_tokens=NUM_TOKENS, ignore_eos=True)


def test_adapters_change_the_outputs(setup):
    _, _, _, expected = setup
    assert len({tuple(e) for e in expected[:4]}) == 4  # each adapter gives its own continuation


def test_mixed_batch_matches_peft_merged_models(setup):
    root, refs, requests, expected = setup
    llm = make_llm(root)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], GREEDY,
                        lora_request=[requests[a] for a in PLAN], use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == expected
    assert [o.lora_request for o in outs] == [requests[a] for a in PLAN]
    assert [o.outputs[0].lora_request for o in outs] == [requests[a] for a in PLAN]
    # logits: the prompt logprobs of every position, under each adapter, in one batch
    lp = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], lp,
                        lora_request=[requests[a] for a in PLAN], use_tqdm=False)
    for out, adapter, prompt in zip(outs, PLAN, PROMPTS):
        ref = hf_logprobs(refs[adapter], prompt).numpy()
        got = [next(iter(d.values())).logprob for d in out.prompt_logprobs[1:]]
        want = [ref[i, prompt[i + 1]] for i in range(len(prompt) - 1)]
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_more_adapters_than_slots_swap_lru(setup):
    """One device slot and two adapters in host memory for three adapters: every step swaps; same tokens."""
    root, _, requests, expected = setup
    llm = make_llm(root, max_loras=1, max_cpu_loras=2)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], GREEDY,
                        lora_request=[requests[a] for a in PLAN], use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == expected
    slots = llm.llm_engine.runner.lora
    assert slots.num_slot_writes >= 3 and slots.store.num_loads >= 3
    # again in the reverse order, one generate call per prompt: adapters come back from host memory or disk
    for a, p, want in reversed(list(zip(PLAN, PROMPTS, expected))):
        out = llm.generate([{"prompt_token_ids": p}], GREEDY, lora_request=requests[a], use_tqdm=False)[0]
        assert list(out.outputs[0].token_ids) == want


def test_prefix_cache_is_keyed_by_adapter(setup):
    root, _, requests, expected = setup
    llm = make_llm(root, max_num_batched_tokens=32)
    prompt = {"prompt_token_ids": PROMPTS[3]}  # 30 tokens: one full block of 16 can be cached
    first = llm.generate([prompt], GREEDY, lora_request=requests["all8"], use_tqdm=False)[0]
    again = llm.generate([prompt], GREEDY, lora_request=requests["all8"], use_tqdm=False)[0]
    other = llm.generate([prompt], GREEDY, lora_request=requests["mlp16"], use_tqdm=False)[0]
    base = llm.generate([prompt], GREEDY, use_tqdm=False)[0]
    assert first.num_cached_tokens == 0 and again.num_cached_tokens == 16
    assert other.num_cached_tokens == 0 and base.num_cached_tokens == 0
    assert list(other.outputs[0].token_ids) == expected[3]  # PLAN[3] is "mlp16"
    assert list(again.outputs[0].token_ids) == list(first.outputs[0].token_ids)


def test_swapping_adapters_never_compiles(setup):
    """The adapter stacks are arguments of the compiled step: swapping adapters through one slot compiles
    nothing after start-up."""
    root, _, requests, expected = setup
    llm = make_llm(root, enforce_eager=False, max_loras=1, max_num_seqs=2, max_num_batched_tokens=16)
    runner = llm.llm_engine.runner
    before = runner.num_compilations
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], GREEDY,
                        lora_request=[requests[a] for a in PLAN], use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == expected
    assert runner.num_compilations == before and runner.lora.num_slot_writes >= 3


def test_beam_search_with_adapters_equals_transformers(setup):
    """beam_search with one adapter per prompt: the beams of transformers' canonical beam search on each
    prompt's PEFT-merged model (no EOS: ignore_eos there, eos_token_id=None here)."""
    root, refs, requests, _ = setup
    llm = make_llm(root)
    plan, prompts = ["mlp16", None], PROMPTS[:2]
    params = BeamSearchParams(beam_width=2, max_tokens=4, ignore_eos=True)
    outs = llm.beam_search([{"prompt_token_ids": p} for p in prompts], params,
                           lora_request=[requests[a] for a in plan])
    for out, adapter, prompt in zip(outs, plan, prompts):
        hf = refs[adapter]
        config = transformers.GenerationConfig(
            num_beams=2, num_return_sequences=2, do_sample=False, max_new_tokens=4, length_penalty=0.0,
            early_stopping="never", eos_token_id=None, pad_token_id=255)
        hf.generation_config.eos_token_id = None
        with torch.no_grad():
            want = hf.generate(torch.tensor([prompt]), generation_config=config).tolist()
        assert [b.tokens for b in out.sequences] == want
        assert all(b.lora_request is requests[adapter] for b in out.sequences)


@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_speculative_decoding_with_adapters_matches_peft(setup, method):
    """Speculation beside LoRA: the drafts of an adapter's sequence are verified with its adapter (the per-token
    slot ids cover the drafts), so greedy outputs stay PEFT's merged models' tokens. The draft model (here the
    base model) proposes without adapters."""
    root, refs, requests, _ = setup
    prompts = [[5, 6, 7, 8] * 4, [9, 10, 11] * 5, [12, 13] * 6]
    plan = ["all8", None, "mlp16"]
    expected = [hf_greedy(refs[a], p, 12) for a, p in zip(plan, prompts)]
    spec = ({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1}
            if method == "ngram" else {"method": method, "model": str(root / "base"), "num_speculative_tokens": 3})
    spec["disable_by_batch_size"] = 64  # every step speculates (the automatic rule would not on a tiny CPU model)
    llm = make_llm(root, speculative_config=spec)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                        lora_request=[requests[a] for a in plan], use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == expected
    assert llm.llm_engine.stats.spec_decode_num_draft_tokens > 0
