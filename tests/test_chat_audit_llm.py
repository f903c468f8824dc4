"""LLM.chat / generate / get_tokenizer against vLLM's documented offline API, on a tiny Llama with a Llama-style
tokenizer (BOS added by the tokenizer and written by the chat template): the prompt text is transformers'
apply_chat_template text, its ids carry one BOS, the template's arguments arrive, errors are clear ValueErrors
raised before any request is queued, and output text is transformers' decode."""

from __future__ import annotations

import copy

import pytest
from chat_audit_tokenizer import llama_tokenizer, save_llama_tokenizer
from hf_models import save_tiny_model

from jaxllm import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
USER = [{"role": "user", "content": "Hello world"}]
THINK_TEMPLATE = (  # Qwen3's switch: enable_thinking=False pre-fills an empty think block
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>"
    "{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}{% endif %}")
RAG_TEMPLATE = ("{% for d in documents %}[doc {{ d.title }}: {{ d.text }}]{% endfor %}"
                "{% for t in tools %}[tool {{ t.function.name }}]{% endfor %}"
                "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
                "{% for c in m.tool_calls or [] %}(call {{ c.function.name }} {{ c.function.arguments.city }})"
                "{% endfor %}{% endfor %}")
GEMMA_TEMPLATE = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                  "{% endif %}{% for m in messages %}<start_of_turn>{{ m['role'] }} {{ m['content'] }}"
                  "<end_of_turn>{% endfor %}<start_of_turn>model ")


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat_audit_llama")
    save_tiny_model(path, "LlamaForCausalLM", vocab_size=448, bos_token_id=1, eos_token_id=2)
    save_llama_tokenizer(path)
    return LLM(str(path), max_num_seqs=4, max_num_batched_tokens=64, enforce_eager=True)


def chat(llm, messages, params=GREEDY, **kwargs):
    return llm.chat(messages, params, use_tqdm=False, **kwargs)


def test_prompt_is_transformers_text_with_one_bos(llm):
    tok = llm.get_tokenizer()
    (out,) = chat(llm, USER)
    text = tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)
    assert out.prompt == text == "<s>[user] Hello world</s>[assistant]"
    assert out.prompt_token_ids == tok(text, add_special_tokens=False).input_ids
    assert out.prompt_token_ids.count(tok.bos_token_id) == 1
    # the same ids through generate give the same greedy reply; the text through generate gets a second BOS
    (same,) = llm.generate({"prompt_token_ids": out.prompt_token_ids}, GREEDY, use_tqdm=False)
    assert same.outputs[0].token_ids == out.outputs[0].token_ids
    (as_text,) = llm.generate({"prompt": text}, GREEDY, use_tqdm=False)
    assert as_text.prompt_token_ids[:2] == [tok.bos_token_id, tok.bos_token_id]


def test_conversations_and_per_conversation_params(llm):
    other = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
             {"role": "user", "content": "What is the weather?"}]
    outs = chat(llm, [USER, other], [GREEDY, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)])
    assert [len(o.outputs[0].token_ids) for o in outs] == [4, 2]
    assert outs[0].outputs[0].token_ids == chat(llm, USER)[0].outputs[0].token_ids
    assert outs[1].prompt == llm.get_tokenizer().apply_chat_template(other, tokenize=False,
                                                                    add_generation_prompt=True)
    with pytest.raises(ValueError, match="lengths of prompts"):
        chat(llm, [USER, other], [GREEDY])
    assert chat(llm, []) == []


def test_template_arguments_reach_the_template(llm):
    on = chat(llm, USER, chat_template=THINK_TEMPLATE)[0].prompt
    off = chat(llm, USER, chat_template=THINK_TEMPLATE, chat_template_kwargs={"enable_thinking": False})[0].prompt
    assert (on, off) == ("<user>Hello world<assistant>", "<user>Hello world<assistant><think></think>")
    assert chat(llm, USER, add_generation_prompt=False)[0].prompt == "<s>[user] Hello world</s>"
    partial = USER + [{"role": "assistant", "content": "The answer is"}]
    cont = chat(llm, partial, add_generation_prompt=False, continue_final_message=True)[0]
    assert cont.prompt == "<s>[user] Hello world</s>[assistant] The answer is"
    docs = [{"title": "A", "text": "sunny"}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    conv = [*USER, {"role": "assistant", "content": "", "tool_calls": [call]}]
    rag = chat(llm, conv, chat_template=RAG_TEMPLATE, tools=tools, chat_template_kwargs={"documents": docs})[0]
    assert rag.prompt == ("[doc A: sunny][tool get_weather]<user>Hello world<assistant>"
                          "(call get_weather Paris)")


def test_content_parts_string_and_openai(llm):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]}]
    assert chat(llm, parts)[0].prompt == "<s>[user] Hello\nworld</s>[assistant]"  # "string": joined by "\n"
    loop = ("{% for m in messages %}{% for p in m['content'] %}({{ p['type'] }}:{{ p['text'] }}){% endfor %}"
            "{% endfor %}")
    assert chat(llm, parts, chat_template=loop)[0].prompt == "(text:Hello)(text:world)"
    assert chat(llm, USER, chat_template=loop)[0].prompt == "(text:Hello world)"
    forced = chat(llm, parts, chat_template=loop, chat_template_content_format="string")[0].prompt
    assert forced == "(:)" * len("Hello\nworld")  # the template iterates the characters of the joined string


@pytest.mark.parametrize("messages, kwargs, match", [
    (USER, {"add_generation_prompt": True, "continue_final_message": True}, "cannot both be True"),
    (USER, {"mm_processor_kwargs": {"num_crops": 4}}, "mm_processor_kwargs is not supported"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}], {},
     "'image_url' are not supported"),
    (USER, {"chat_template_kwargs": {"tokenize": True}}, "unexpected chat template kwargs"),
    (USER, {"chat_template": "{{ messages[0]['content'].nope() }}"}, "chat template error"),
    (USER, {"lora_request": __import__("jaxllm.lora", fromlist=["LoRARequest"]).LoRARequest("a", 1, "/none")},
     "LoRA is not enabled"),
])
def test_chat_errors_queue_nothing(llm, messages, kwargs, match):
    with pytest.raises(ValueError, match=match):
        chat(llm, messages, **kwargs)
    assert not llm.llm_engine.has_unfinished_requests()


def test_template_errors_and_missing_template(llm):
    good = chat(llm, USER, chat_template=GEMMA_TEMPLATE)[0]
    system = [{"role": "system", "content": "Be brief."}, *USER]
    with pytest.raises(ValueError, match="conversation 1: .*System role not supported"):
        chat(llm, [USER, system], chat_template=GEMMA_TEMPLATE)
    assert chat(llm, USER, chat_template=GEMMA_TEMPLATE)[0].outputs[0].token_ids == good.outputs[0].token_ids
    bare = copy.deepcopy(llama_tokenizer())
    bare.chat_template = None
    kept = llm.get_tokenizer()
    llm.set_tokenizer(bare)
    try:
        with pytest.raises(ValueError, match="default chat template is no longer allowed"):
            chat(llm, USER)
        assert chat(llm, USER, chat_template=GEMMA_TEMPLATE)[0].prompt == good.prompt
    finally:
        llm.set_tokenizer(kept)


def test_use_tqdm_and_generate_prompt_forms(llm):
    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.n = 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix_str(self, text):
            pass

        def close(self):
            pass

    llm.chat([USER, USER], GREEDY, use_tqdm=Bar)
    assert [b.n for b in bars] == [2]
    tok = llm.get_tokenizer()
    ids = tok.encode("Hello world")
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == "Hello world"
    text, tokens, plain = llm.generate([{"prompt": "Hello world"}, {"prompt_token_ids": ids}, "Hello world"],
                                       GREEDY, use_tqdm=False)
    assert text.prompt_token_ids == tokens.prompt_token_ids == plain.prompt_token_ids == ids
    assert text.prompt == "Hello world" and tokens.prompt is None
    assert text.outputs[0].token_ids == tokens.outputs[0].token_ids
    with pytest.raises(ValueError, match="multi_modal_data.*text-only"):
        llm.generate({"prompt": "Hi", "multi_modal_data": {"image": None}}, GREEDY, use_tqdm=False)


def test_output_text_is_transformers_decode(llm):
    """Output text is the continuation transformers' decode gives the prompt; with a SentencePiece decoder that
    keeps the space a word token starts with (as vLLM's incremental detokenizer does), so it equals decoding
    the output ids alone up to that space."""
    tok = llm.get_tokenizer()
    words = [i for i in range(len(tok)) if not tok.convert_ids_to_tokens(i).startswith(("<0x", "<"))]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, allowed_token_ids=words)
    for out in llm.generate(["Hello world", "héllo 你好 😀", "What is"], params, use_tqdm=False):
        ids, prompt = out.outputs[0].token_ids, out.prompt_token_ids
        before = tok.decode(prompt, skip_special_tokens=True)
        after = tok.decode(prompt + ids, skip_special_tokens=True)
        assert after.startswith(before) and out.outputs[0].text == after[len(before):]
        alone = tok.decode(ids, skip_special_tokens=True)
        assert out.outputs[0].text.removeprefix(" ") == alone
    # over byte tokens too: the text is transformers' decode, up to an unfinished last character held back
    free = llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=16, ignore_eos=True),
                        use_tqdm=False)[0].outputs[0]
    assert tok.decode(free.token_ids, skip_special_tokens=True).startswith(free.text.removeprefix(" "))


def test_multibyte_characters_split_across_tokens_detokenize_exactly():
    """Byte-fallback tokens: each CJK / emoji character is 3-4 tokens; the incremental text equals
    transformers' decode and never shows a half character."""
    from jaxllm.engine.detokenizer import IncrementalDetokenizer, TokenizerView

    tok = llama_tokenizer()
    view = TokenizerView(tok)
    for text in ["héllo 你好 😀 world", "the fox 👨\u200d👩\u200d👧 jumps", "日本語のテキスト"]:
        out = tok(text, add_special_tokens=False).input_ids
        assert len(out) > len(text.split())  # characters span several tokens
        det = IncrementalDetokenizer(view, [tok.bos_token_id], SamplingParams())
        for n, token in enumerate(out, 1):
            det.update(token, n, False)
            assert "\ufffd" not in det.output_text
        assert det.output_text == tok.decode(out, skip_special_tokens=True) == text


def test_preprocess_chat_gives_chats_prompts(llm):
    conversations = [USER, [{"role": "user", "content": "Hi"}]]
    prompts = llm.preprocess_chat(conversations, chat_template=THINK_TEMPLATE,
                                  chat_template_kwargs={"enable_thinking": False})
    tok = llm.get_tokenizer()
    assert [p["prompt"] for p in prompts] == ["<user>Hello world<assistant><think></think>",
                                              "<user>Hi<assistant><think></think>"]
    assert [p["prompt_token_ids"] for p in prompts] == [tok(p["prompt"], add_special_tokens=False).input_ids
                                                        for p in prompts]
    direct = chat(llm, conversations, chat_template=THINK_TEMPLATE, chat_template_kwargs={"enable_thinking": False})
    via = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert [(o.prompt, o.prompt_token_ids, o.outputs[0].token_ids) for o in via] == \
        [(o.prompt, o.prompt_token_ids, o.outputs[0].token_ids) for o in direct]
    with pytest.raises(TypeError, match="lora_request"):
        llm.preprocess_chat(USER, lora_request="adapter")
    # chat's tokenization_kwargs reach the tokenizer (vLLM's chat takes them too)
    (cut,) = chat(llm, USER, tokenization_kwargs={"truncation": True, "max_length": 3})
    assert cut.prompt_token_ids == chat(llm, USER)[0].prompt_token_ids[:3]
    with pytest.raises(TypeError, match="tokenization_kwargs"):
        chat(llm, USER, tokenization_kwargs=["truncation"])
