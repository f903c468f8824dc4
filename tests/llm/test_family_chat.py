"""LLM.chat with the chat templates of the new families: Gemma's template rejects a system message and roles
that do not alternate (a ValueError carrying the template's message, as vLLM raises), Phi-3's takes a
system turn (OLMo 2's template takes one the same way)."""

from __future__ import annotations

import pytest
from engine.bpe_tokenizer import bpe_tokenizer
from hf_models import save_tiny_model

from jaxllm import LLM, SamplingParams

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")
SPECIAL = {"pad_token_id": 1, "eos_token_id": 0, "bos_token_id": 0}
PARAMS = SamplingParams(temperature=0, max_tokens=3)


def make_llm(path, arch, template, **overrides):
    save_tiny_model(path, arch, vocab_size=448, **SPECIAL, **overrides)
    tok = bpe_tokenizer()
    tok.chat_template = template
    tok.bos_token = "<eos>"
    tok.save_pretrained(str(path))
    return LLM(str(path), max_num_seqs=2, max_num_batched_tokens=64, enforce_eager=True)


def test_gemma_template_system_role_is_a_clear_error(tmp_path):
    llm = make_llm(tmp_path, "Gemma2ForCausalLM", GEMMA_TEMPLATE, head_dim=16, sliding_window=8)
    out = llm.chat([{"role": "user", "content": "Hello world"}], PARAMS, use_tqdm=False)[0]
    assert out.prompt == "<eos><start_of_turn>user\nHello world<end_of_turn>\n<start_of_turn>model\n"
    assert len(out.outputs[0].token_ids) >= 1
    with pytest.raises(ValueError, match="System role not supported"):
        llm.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], PARAMS)
    with pytest.raises(ValueError, match="roles must alternate"):
        llm.chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], PARAMS)
    # the engine keeps working after the rejected conversations
    again = llm.chat([{"role": "user", "content": "Hello world"}], PARAMS, use_tqdm=False)[0]
    assert again.outputs[0].token_ids == out.outputs[0].token_ids


def test_phi3_template_takes_a_system_turn(tmp_path):
    llm = make_llm(tmp_path, "Phi3ForCausalLM", PHI3_TEMPLATE)
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    out = llm.chat(conv, PARAMS, use_tqdm=False)[0]
    assert out.prompt == "<|system|>\nBe brief.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\n"
