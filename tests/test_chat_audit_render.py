"""LLM.chat's rendering, pinned to vLLM and transformers without a model: which template renders, the "auto"
content format (vLLM's syntax-tree rules), chat_template_kwargs, tool-call messages, and the prompt text / ids
(transformers' apply_chat_template text, tokenized without special tokens: one BOS)."""

from __future__ import annotations

import copy

import pytest
from chat_audit_tokenizer import llama_tokenizer

from jaxllm.chat_template import NO_TEMPLATE, detect_content_format, resolve_template, template_kwargs
from jaxllm.chat_utils import normalize_messages, render_conversations

USER = [{"role": "user", "content": "Hello world"}]


@pytest.mark.parametrize("template, expected", [
    # a plain loop over messages that prints the content: a string
    ("{% for message in messages %}{{ message['content'] }}{% endfor %}", "string"),
    # loops over each message's parts (item access, attribute access, a filter, a slice): openai
    ("{% for message in messages %}{% for c in message['content'] %}{{ c['text'] }}{% endfor %}{% endfor %}",
     "openai"),
    ("{% for m in messages %}{% for c in m.content %}{{ c.text }}{% endfor %}{% endfor %}", "openai"),
    (("{% for m in messages %}{% for c in m['content'] | selectattr('type', 'equalto', 'text') %}{{ c.text }}"
     "{% endfor %}{% endfor %}"), "openai"),
    # messages reached through a variable set from it (Llama 3's loop_messages), with loop controls
    (("{% set loop_messages = messages[1:] %}{% for m in loop_messages %}{% for c in m['content'] %}"
     "{% if c['type'] == 'text' %}{{ c['text'] }}{% break %}{% endif %}{% endfor %}{% endfor %}"), "openai"),
    # HF's {% generation %} block parses
    (("{% for m in messages %}{% generation %}{% for c in m['content'] %}{{ c.text }}{% endfor %}"
     "{% endgeneration %}{% endfor %}"), "openai"),
    # a loop over the 'content' of something that is not a message: a string (vLLM looks at messages only)
    (("{% for d in documents %}{% for c in d['content'] %}{{ c }}{% endfor %}{% endfor %}"
     "{% for m in messages %}{{ m['content'] }}{% endfor %}"), "string"),
    ("{% for x in y", "string"),  # does not parse
])
def test_auto_content_format_follows_vllm(template, expected):
    assert detect_content_format(template) == expected


def test_prompt_text_and_ids_match_transformers_without_a_second_bos():
    tok = llama_tokenizer()
    kwargs = template_kwargs(None, add_generation_prompt=True, continue_final_message=False, tools=None)
    (prompt,) = render_conversations(tok, [USER], "string", chat_template=resolve_template(tok, None, None),
                                     **kwargs)
    text = tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)
    assert prompt["prompt"] == text and text.startswith("<s>")
    ids = prompt["prompt_token_ids"]
    assert ids == tok(text, add_special_tokens=False).input_ids  # what vLLM sends
    assert ids == tok.apply_chat_template(USER, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    # tokenization_kwargs reach the tokenizer: special tokens on request, and truncation
    (again,) = render_conversations(tok, [USER], "string", {"add_special_tokens": True},
                                    chat_template=tok.chat_template, **kwargs)
    assert again["prompt_token_ids"] == [tok.bos_token_id, *ids]
    (cut,) = render_conversations(tok, [USER], "string", {"truncation": True, "max_length": 4},
                                  chat_template=tok.chat_template, **kwargs)
    assert cut["prompt_token_ids"] == ids[:4]


def test_template_resolution():
    tok = copy.deepcopy(llama_tokenizer())
    assert resolve_template(tok, "{{ 'given' }}", None) == "{{ 'given' }}"
    tok.chat_template = {"default": "D{{ messages[0]['content'] }}", "tool_use": "T{{ tools | length }}"}
    assert resolve_template(tok, None, None) == "D{{ messages[0]['content'] }}"
    assert resolve_template(tok, None, [{"type": "function"}]) == "T{{ tools | length }}"  # the tool-use one
    tok.chat_template = None
    with pytest.raises(ValueError, match="default chat template is no longer allowed") as err:
        resolve_template(tok, None, None)
    assert str(err.value) == NO_TEMPLATE
    with pytest.raises(TypeError, match="chat_template must be a str"):
        resolve_template(tok, ["not", "a", "template"], None)


def test_template_kwargs_merge_and_reserved_keys():
    explicit = {"add_generation_prompt": True, "continue_final_message": False, "tools": None}
    assert template_kwargs({"enable_thinking": False}, **explicit) == {**explicit, "enable_thinking": False}
    # vLLM's LLM.chat: the dict's keys update the named arguments
    merged = template_kwargs({"add_generation_prompt": False, "continue_final_message": True}, **explicit)
    assert merged["add_generation_prompt"] is False and merged["continue_final_message"] is True
    with pytest.raises(ValueError, match="cannot both be True"):
        template_kwargs(None, **{**explicit, "continue_final_message": True})
    for key in ("chat_template", "tokenize"):
        with pytest.raises(ValueError, match=f"unexpected chat template kwargs.*{key}"):
            template_kwargs({key: True}, **explicit)
    with pytest.raises(TypeError, match="chat_template_kwargs must be a dict"):
        template_kwargs([("enable_thinking", True)], **explicit)


def test_tool_call_messages_as_vllm_passes_them():
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    conv = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"},
                                                            {"type": "text", "text": "20C"}]},
        {"role": "assistant", "content": "It is sunny.", "tool_calls": []},
    ]
    original = copy.deepcopy(conv)
    msgs = normalize_messages(conv, "openai")
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}  # a dict, as HF templates read
    assert msgs[1]["content"] == []
    assert msgs[2]["content"] == "sunny\n20C" and msgs[2]["tool_call_id"] == "c1"  # a tool result: one str
    assert "tool_calls" not in msgs[3] and msgs[3]["content"] == [{"type": "text", "text": "It is sunny."}]
    assert conv == original  # the caller's messages are not changed
    bad = {**call, "function": {"name": "f", "arguments": "{not json"}}
    missing = {**call, "function": {"name": "f"}}
    (_, got) = normalize_messages([conv[0], {"role": "assistant", "tool_calls": [bad, missing]}], "string")
    assert [c["function"]["arguments"] for c in got["tool_calls"]] == [{}, {}]
    (thought,) = normalize_messages([{"role": "assistant", "content": "4", "reasoning": "2+2"}], "string")
    assert thought["reasoning_content"] == thought["reasoning"] == "2+2"


def test_tokenizer_modes(tmp_path):
    from chat_audit_tokenizer import save_llama_tokenizer

    from jaxllm.tokenizer import load_tokenizer

    save_llama_tokenizer(tmp_path)
    for mode in ("auto", "hf"):  # vLLM's "hf": the HF fast tokenizer
        tok = load_tokenizer(str(tmp_path), tokenizer_mode=mode)
        assert tok.is_fast and tok.encode("Hello world") == llama_tokenizer().encode("Hello world")
    with pytest.raises(ValueError, match="tokenizer_mode='custom' is not supported"):
        load_tokenizer(str(tmp_path), tokenizer_mode="custom")


class OwnRenderer:
    """A tokenizer that renders chats without templates (as mistral_common's): get_chat_template is not
    implemented, apply_chat_template takes no chat_template."""

    def get_chat_template(self, chat_template=None, tools=None):
        raise NotImplementedError("no templates by design")

    def apply_chat_template(self, conversation, tokenize=True, chat_template=None, **kwargs):
        assert chat_template is None and not tokenize
        return "".join(f"[INST] {m['content']} [/INST]" for m in conversation)

    def __call__(self, text, **kwargs):
        return llama_tokenizer()(text, **kwargs)


def test_tokenizer_that_renders_chats_itself():
    from jaxllm.chat_utils import resolve_content_format

    tok = OwnRenderer()
    assert resolve_template(tok, None, None) is None
    assert resolve_content_format("auto", None) == "string"
    kwargs = template_kwargs(None, add_generation_prompt=True, continue_final_message=False, tools=None)
    (prompt,) = render_conversations(tok, [USER], "string", **kwargs)
    assert prompt["prompt"] == "[INST] Hello world [/INST]"
    assert prompt["prompt_token_ids"] == llama_tokenizer()(prompt["prompt"], add_special_tokens=False).input_ids
