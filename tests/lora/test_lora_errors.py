"""Bad LoRA input is a clear ValueError/TypeError before any device work, and leaves the engine usable."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hf_models import save_tiny_model
from lora_adapters import save_peft_adapter

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.engine_args import EngineArgs
from jaxllm.lora import LoRARequest

GREEDY = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
PROMPT = {"prompt_token_ids": [1, 2, 3, 4]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_errors")
    save_tiny_model(root / "base", "LlamaForCausalLM")
    save_peft_adapter(root / "base", root / "good", r=8, alpha=16, targets=("q_proj", "v_proj"))
    save_peft_adapter(root / "base", root / "rank16", r=16, alpha=16, targets=("q_proj",))
    save_tiny_model(root / "other", "LlamaForCausalLM", hidden_size=32, intermediate_size=64)
    save_peft_adapter(root / "other", root / "other_adapter", r=8, alpha=16, targets=("q_proj",))
    llm = LLM(str(root / "base"), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
              enforce_eager=True, enable_lora=True, max_lora_rank=8)
    return root, llm


def edited_copy(root, name, edit):
    """A copy of the good adapter with its adapter_config.json edited by ``edit(dict)``."""
    path = root / name
    if not path.exists():
        shutil.copytree(root / "good", path)
        conf = json.loads((path / "adapter_config.json").read_text())
        edit(conf)
        (path / "adapter_config.json").write_text(json.dumps(conf))
    return str(path)


def expect_error(llm, request, error, match):
    with pytest.raises(error, match=match):
        llm.generate([PROMPT, PROMPT], GREEDY, lora_request=[None, request], use_tqdm=False)
    assert not llm.llm_engine.has_unfinished_requests()  # nothing of the batch was queued


def test_adapter_errors(setup):
    root, llm = setup
    expect_error(llm, LoRARequest("big", 1, str(root / "rank16")), ValueError, "greater than max_lora_rank=8")
    expect_error(llm, LoRARequest("other", 2, str(root / "other_adapter")), ValueError, "another model")
    expect_error(llm, LoRARequest("missing", 3, str(root / "nowhere")), ValueError, "is not a folder")
    expect_error(llm, LoRARequest("head", 4, edited_copy(root, "head", lambda c: c.update(
        target_modules=["q_proj", "lm_head"]))), ValueError, r"target_modules \['lm_head'\]")
    expect_error(llm, LoRARequest("dora", 5, edited_copy(root, "dora", lambda c: c.update(use_dora=True))),
                 ValueError, "use_dora")
    nofile = edited_copy(root, "nofile", lambda c: None)
    os.remove(os.path.join(nofile, "adapter_model.safetensors"))
    expect_error(llm, LoRARequest("nofile", 6, nofile), ValueError, "no adapter_model.safetensors")
    expect_error(llm, "good", TypeError, "LoRARequest")
    # one id, two adapters
    llm.generate([PROMPT], GREEDY, lora_request=LoRARequest("good", 7, str(root / "good")), use_tqdm=False)
    expect_error(llm, LoRARequest("renamed", 7, str(root / "rank16")), ValueError, "already used")
    # the engine still serves the good adapter
    out = llm.generate([PROMPT], GREEDY, lora_request=LoRARequest("good", 7, str(root / "good")), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 2


def test_request_and_argument_errors(setup, tmp_path):
    root, llm = setup
    with pytest.raises(ValueError, match="2 entries but there are 1 prompts"):
        llm.generate([PROMPT], GREEDY, lora_request=[None, None], use_tqdm=False)
    with pytest.raises(ValueError, match="lora_int_id must be > 0"):
        LoRARequest("zero", 0, str(root / "good"))
    with pytest.raises(ValueError, match="lora_path cannot be empty"):
        LoRARequest("nopath", 1)
    assert LoRARequest("a", 1, "/x") == LoRARequest("a", 2, "/y")  # vLLM: equal when the names are
    base = LLM(str(root / "base"), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
               enforce_eager=True)
    with pytest.raises(ValueError, match="enable_lora=True"):
        base.generate([PROMPT], GREEDY, lora_request=LoRARequest("good", 1, str(root / "good")), use_tqdm=False)
    with pytest.raises(ValueError, match="enable_lora=True is an LLM keyword"):
        jaxllm.load_model(str(root / "base"), enable_lora=True)
    for kwargs, match in (({"max_lora_rank": 7}, "max_lora_rank=7"), ({"max_loras": 0}, "max_loras"),
                          ({"max_loras": 4, "max_cpu_loras": 2}, "max_cpu_loras"),
                          ({"lora_dtype": "int8"}, "lora_dtype")):
        with pytest.raises(ValueError, match=match):
            EngineArgs.from_kwargs({"enable_lora": True, **kwargs})
