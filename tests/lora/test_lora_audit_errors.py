"""LoRA audit of vLLM's documented errors and scheduling: an adapter on the embeddings or the LM head (vLLM's
extra-vocabulary LoRA) is refused by name, as are an adapter for another base model (its layer count or
widths), a bad path and PEFT's pickle-only format; every error comes before device work and leaves the other
prompts' results unchanged. More adapters than ``max_loras`` in one batch are scheduled, not refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hf_models import hf_greedy, save_tiny_model
from lora_adapters import save_peft_adapter

from jaxllm import LLM, SamplingParams
from jaxllm.lora import LoRARequest

GREEDY = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
PROMPTS = [{"prompt_token_ids": [5, 9, 14, 2, 7]}, {"prompt_token_ids": [40, 41, 42]}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_audit_errors")
    base = save_tiny_model(root / "base", "LlamaForCausalLM")
    refs = {}
    for i, name in enumerate(("a", "b", "c")):
        refs[name] = save_peft_adapter(root / "base", root / name, r=8, alpha=16, seed=i + 1,
                                       targets=("q_proj", "v_proj", "down_proj"))
    llm = LLM(str(root / "base"), skip_tokenizer_init=True, max_num_seqs=8, max_num_batched_tokens=32,
              enforce_eager=True, enable_lora=True, max_loras=2, max_lora_rank=8)
    return root, base, refs, llm


def check_refused(llm, request, match):
    """The bad adapter's batch raises ValueError naming the problem; nothing is queued, and the engine then
    serves the base model as before."""
    steps = llm.llm_engine.stats.num_steps
    with pytest.raises(ValueError, match=match):
        llm.generate(PROMPTS, GREEDY, lora_request=[None, request], use_tqdm=False)
    assert llm.llm_engine.stats.num_steps == steps and not llm.llm_engine.has_unfinished_requests()


@pytest.mark.parametrize("targets, match", [
    (["q_proj", "embed_tokens"], r"target_modules \['embed_tokens'\]"),
    (["lm_head"], r"target_modules \['lm_head'\]"),
])
def test_embedding_and_lm_head_adapters_are_refused(setup, tmp_path, targets, match):
    root, _, _, llm = setup
    save_peft_adapter(root / "base", tmp_path / "x", r=8, alpha=8, targets=targets)
    check_refused(llm, LoRARequest("x", 11, str(tmp_path / "x")), match)


def test_modules_to_save_is_refused(setup, tmp_path):
    root, _, _, llm = setup
    shutil.copytree(root / "a", tmp_path / "m")
    conf = json.loads((tmp_path / "m" / "adapter_config.json").read_text())
    conf["modules_to_save"] = ["lm_head"]
    (tmp_path / "m" / "adapter_config.json").write_text(json.dumps(conf))
    check_refused(llm, LoRARequest("m", 12, str(tmp_path / "m")), "modules_to_save")


@pytest.mark.parametrize("overrides, match", [
    ({"num_hidden_layers": 3}, "layer 2 but the base model has 2 layers"),
    ({"intermediate_size": 96}, "another model"),
    ({"num_key_value_heads": 4}, "another model"),
])
def test_adapter_for_another_base_is_refused(setup, tmp_path, overrides, match):
    *_, llm = setup
    save_tiny_model(tmp_path / "other", "LlamaForCausalLM", **overrides)
    save_peft_adapter(tmp_path / "other", tmp_path / "x", r=8, alpha=8, targets=("v_proj", "down_proj"))
    check_refused(llm, LoRARequest("x", 13, str(tmp_path / "x")), match)


def test_bad_paths_are_refused(setup, tmp_path):
    root, _, _, llm = setup
    (tmp_path / "file").write_text("not an adapter")
    check_refused(llm, LoRARequest("f", 14, str(tmp_path / "file")), "is not a folder")
    (tmp_path / "empty").mkdir()
    check_refused(llm, LoRARequest("e", 15, str(tmp_path / "empty")), "no adapter_config.json")
    shutil.copytree(root / "a", tmp_path / "bin")
    (tmp_path / "bin" / "adapter_model.safetensors").rename(tmp_path / "bin" / "adapter_model.bin")
    check_refused(llm, LoRARequest("bin", 16, str(tmp_path / "bin")), "only adapter_model.bin")
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "adapter_config.json").write_text("{")
    check_refused(llm, LoRARequest("j", 17, str(tmp_path / "badjson")), "not valid JSON")


def test_more_adapters_than_max_loras_in_one_batch_are_scheduled(setup):
    """Three adapters and the base model in one batch with max_loras=2: vLLM schedules them over several
    steps; every prompt gets its own adapter's tokens, in prompt order."""
    root, base, refs, llm = setup
    refs = {**refs, None: base}
    plan = ["a", "b", None, "c", "a", "c"]
    prompts = [PROMPTS[i % 2] for i in range(len(plan))]
    loras = [None if a is None else LoRARequest(a, ord(a), str(root / a)) for a in plan]
    outs = llm.generate(prompts, GREEDY, lora_request=loras, use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == [
        hf_greedy(refs[a], p["prompt_token_ids"], 3) for a, p in zip(plan, prompts)]
    assert [o.lora_request for o in outs] == loras


def test_chat_with_an_adapter(tmp_path):
    """``LLM.chat(..., lora_request=...)`` runs the rendered conversation with the adapter (vLLM's keyword)."""
    from hf_models import save_tokenizer_with_template

    base = save_tiny_model(tmp_path / "base", "LlamaForCausalLM", vocab_size=448)  # the tokenizer's vocabulary
    save_tokenizer_with_template(tmp_path / "base")
    ref = save_peft_adapter(tmp_path / "base", tmp_path / "a", r=8, alpha=16, targets=("q_proj", "up_proj"))
    llm = LLM(str(tmp_path / "base"), max_num_seqs=4, max_num_batched_tokens=32, enforce_eager=True,
              enable_lora=True, max_lora_rank=8)
    messages = [{"role": "user", "content": "hello there"}]
    request = LoRARequest("a", 1, str(tmp_path / "a"))
    out = llm.chat(messages, GREEDY, lora_request=request, use_tqdm=False)[0]
    assert out.lora_request == request
    assert list(out.outputs[0].token_ids) == hf_greedy(ref, list(out.prompt_token_ids), 3)
    plain = llm.chat(messages, GREEDY, use_tqdm=False)[0]
    assert list(plain.outputs[0].token_ids) == hf_greedy(base, list(plain.prompt_token_ids), 3)


def test_chunked_prefills_and_prompt_logprobs_across_adapter_swaps(setup):
    """Prompts longer than the token budget (several prefill chunks each) under three adapters and one device
    slot: every chunk runs with its own adapter whatever ran between, so prompt logprobs and tokens are the
    merged models'."""
    from hf_models import hf_logprobs

    root, base, refs, _ = setup
    refs = {**refs, None: base}
    llm = LLM(str(root / "base"), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=16,
              enforce_eager=True, enable_lora=True, max_loras=1, max_lora_rank=8)
    plan = ["a", "b", None, "c"]
    prompts = [[(7 * i + 3 * j) % 250 + 1 for j in range(40 + 5 * i)] for i in range(len(plan))]
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True, prompt_logprobs=0)
    loras = [None if a is None else LoRARequest(a, ord(a), str(root / a)) for a in plan]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=loras, use_tqdm=False)
    for out, adapter, prompt in zip(outs, plan, prompts):
        assert list(out.outputs[0].token_ids) == hf_greedy(refs[adapter], prompt, 3)
        ref = hf_logprobs(refs[adapter], prompt).numpy()
        got = [next(iter(d.values())).logprob for d in out.prompt_logprobs[1:]]
        assert abs(np.array(got) - [ref[i, prompt[i + 1]] for i in range(len(prompt) - 1)]).max() < 3e-4


def test_lora_path_forms(setup, monkeypatch):
    """``lora_path`` as vLLM resolves it: ``~/...`` expanded, a relative path from the working directory, and
    any other name taken for a HF hub repo id (an unknown one is a ValueError naming it)."""
    root, _, refs, llm = setup
    want = hf_greedy(refs["b"], PROMPTS[0]["prompt_token_ids"], 3)
    monkeypatch.setenv("HOME", str(root))
    monkeypatch.chdir(root)
    for i, path in enumerate(("~/b", "b", "./b")):
        out = llm.generate(PROMPTS[:1], GREEDY, lora_request=LoRARequest(f"b{i}", 21 + i, path), use_tqdm=False)
        assert list(out[0].outputs[0].token_ids) == want
    check_refused(llm, LoRARequest("hub", 31, "no-such-owner-jaxllm/no-such-adapter"),
                  "'no-such-owner-jaxllm/no-such-adapter' is not a folder, and not a HF hub repo id")


def test_enable_lora_on_a_moe_model_is_a_clear_error(tmp_path):
    save_tiny_model(tmp_path / "moe", "MixtralForCausalLM", num_local_experts=4, num_experts_per_tok=2)
    with pytest.raises(ValueError, match="enable_lora=True is not supported for MixtralForCausalLM"):
        LLM(str(tmp_path / "moe"), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16,
            enforce_eager=True, enable_lora=True)
