"""vLLM's offline LLM surface on a tiny model: generate's keywords (use_tqdm callable, priority,
tokenization_kwargs, lora_request), chat's (tools, content parts and formats), llm_engine, prefix-cache reset,
metrics, profiling and world size."""

from __future__ import annotations

import os
from typing import ClassVar

import pytest

from jaxllm import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)


class RecordingBar:
    """A stand-in for tqdm's class: records how the LLM builds and drives it."""

    made: ClassVar[list[RecordingBar]] = []

    def __init__(self, **kwargs):
        self.kwargs, self.n, self.closed, self.postfixes = kwargs, 0, False, []
        RecordingBar.made.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, text):
        self.postfixes.append(text)

    def close(self):
        self.closed = True


def test_use_tqdm_callable_builds_the_bar(llama_llm):
    RecordingBar.made.clear()
    outs = llama_llm.generate(["Hello", "world", "again"], GREEDY, use_tqdm=RecordingBar)
    (bar,) = RecordingBar.made
    assert bar.kwargs["total"] == 3 and bar.kwargs["desc"] == "Processed prompts"
    assert bar.n == 3 and bar.closed and len(outs) == 3
    llama_llm.chat([{"role": "user", "content": "hi"}], GREEDY, use_tqdm=RecordingBar)
    assert len(RecordingBar.made) == 2 and RecordingBar.made[1].n == 1


def test_generate_keywords(llama_llm):
    tok = llama_llm.get_tokenizer()
    text = "Hello world, the quick brown fox"
    ids = tok(text).input_ids
    out = llama_llm.generate(text, GREEDY, tokenization_kwargs={"truncation": True, "max_length": 3},
                             use_tqdm=False)[0]
    assert out.prompt_token_ids == ids[:3] and out.prompt == text
    kept = llama_llm.generate(text, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True,
                                                   truncate_prompt_tokens=2), use_tqdm=False)[0]
    alone = llama_llm.generate({"prompt_token_ids": ids[-2:]}, GREEDY, use_tqdm=False)[0]
    assert kept.prompt_token_ids == ids[-2:] and kept.outputs[0].token_ids == alone.outputs[0].token_ids
    with pytest.raises(TypeError, match="lora_request 0 must be a jaxllm.lora.LoRARequest"):
        llama_llm.generate(text, GREEDY, lora_request=object(), use_tqdm=False)
    with pytest.raises(ValueError, match="Priority scheduling is not enabled"):
        llama_llm.generate([text, text], GREEDY, priority=[0, 1], use_tqdm=False)
    with pytest.raises(ValueError, match="lengths of prompts"):
        llama_llm.generate([text, text], GREEDY, priority=[0], use_tqdm=False)
    with pytest.raises(TypeError, match="tokenization_kwargs"):
        llama_llm.generate(text, GREEDY, tokenization_kwargs=[("truncation", True)], use_tqdm=False)
    assert not llama_llm.llm_engine.has_unfinished_requests()


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
TOOL_TEMPLATE = ("{% if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}<eos>{% endif %}"
                 "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
PARTS_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{% for p in m['content'] %}{{ p['text'] }}|"
                  "{% endfor %}<eos>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


def test_chat_tools_and_content_parts(llama_llm):
    user = [{"role": "user", "content": "Weather?"}]
    out = llama_llm.chat(user, GREEDY, chat_template=TOOL_TEMPLATE, tools=TOOLS, use_tqdm=False)[0]
    assert out.prompt == "<tools>get_weather;<eos><user>Weather?<eos><assistant>"
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]
    # the default template renders content as a string: "auto" joins the text parts with "\n"
    assert llama_llm.chat(parts, GREEDY, use_tqdm=False)[0].prompt == "<user>Hi\nthere<eos><assistant>"
    # a template that loops over the parts gets them ("auto" sees the loop; a str content becomes one part)
    mixed = [parts, [{"role": "user", "content": "Hi"}]]
    outs = llama_llm.chat(mixed, GREEDY, chat_template=PARTS_TEMPLATE, use_tqdm=False)
    assert [o.prompt for o in outs] == ["<user>Hi|there|<eos><assistant>", "<user>Hi|<eos><assistant>"]
    forced = llama_llm.chat(parts, GREEDY, chat_template_content_format="string", use_tqdm=False)[0]
    assert forced.prompt == "<user>Hi\nthere<eos><assistant>"
    cont = llama_llm.chat([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], GREEDY,
                          add_generation_prompt=False, continue_final_message=True, use_tqdm=False)[0]
    assert cont.prompt == "<user>Hi<eos><assistant>Yo"


@pytest.mark.parametrize("messages, kwargs, error, match", [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}], {}, ValueError,
     "type 'image_url' are not supported"),
    ([{"role": "user", "content": "a"}, {"content": "b"}], {}, ValueError, "message 1"),
    ([{"role": "user", "content": None}], {}, ValueError, "message 0"),
    ([{"role": "user", "content": "a"}], {"mm_processor_kwargs": {"x": 1}}, ValueError, "mm_processor_kwargs"),
    ([{"role": "user", "content": "a"}], {"lora_request": 1}, TypeError, "lora_request 0"),
    ([{"role": "user", "content": "a"}], {"chat_template_content_format": "html"}, ValueError, "'html'"),
    ([{"role": "user", "content": "a"}], {"tools": "get_weather"}, TypeError, "tools"),
])
def test_chat_errors(llama_llm, messages, kwargs, error, match):
    with pytest.raises(error, match=match):
        llama_llm.chat(messages, GREEDY, use_tqdm=False, **kwargs)
    assert not llama_llm.llm_engine.has_unfinished_requests()


def test_llm_engine_add_request_and_accessors(llama_llm):
    engine = llama_llm.llm_engine
    ref = llama_llm.generate("Hello world", GREEDY, use_tqdm=False)[0]
    engine.add_request("text", "Hello world", GREEDY)
    engine.add_request("dict", {"prompt": "Hello world"}, GREEDY)
    engine.add_request("ids", {"prompt_token_ids": ref.prompt_token_ids}, GREEDY)
    engine.add_request("list", ref.prompt_token_ids, GREEDY)
    final = {}
    while engine.has_unfinished_requests():
        final.update({o.request_id: o for o in engine.step() if o.finished})
    assert sorted(final) == ["dict", "ids", "list", "text"]
    assert all(o.outputs[0].token_ids == ref.outputs[0].token_ids for o in final.values())
    assert engine.get_tokenizer() is llama_llm.get_tokenizer()
    assert engine.model_config is llama_llm.model_config and engine.model_config.vocab_size == 448


def test_prefix_cache_reset_and_metrics(llama_llm):
    prompt = {"prompt_token_ids": list(range(1, 41))}  # 2 full blocks of 16
    before = {m.name: m for m in llama_llm.get_metrics() if "finished_reason" not in m.labels}
    llama_llm.generate(prompt, GREEDY, use_tqdm=False)
    assert llama_llm.generate(prompt, GREEDY, use_tqdm=False)[0].num_cached_tokens == 32
    assert llama_llm.reset_prefix_cache() is True
    assert llama_llm.generate(prompt, GREEDY, use_tqdm=False)[0].num_cached_tokens == 0
    after = {m.name: m for m in llama_llm.get_metrics() if "finished_reason" not in m.labels}
    delta = lambda name: after[name].value - before[name].value
    assert delta("vllm:prompt_tokens") == 120 and delta("vllm:generation_tokens") == 12
    assert delta("vllm:prefix_cache_queries") == 120 and delta("vllm:prefix_cache_hits") == 32
    for name in ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds"):
        assert after[name].count - before[name].count == 3
        assert after[name].buckets["+Inf"] == after[name].count and after[name].sum > 0
    assert after["vllm:num_requests_running"].value == 0


def test_profile_and_world_size(llama_llm, tmp_path):
    llama_llm.start_profile(str(tmp_path))
    with pytest.raises(RuntimeError, match="already"):
        llama_llm.start_profile()
    llama_llm.generate("Hello", GREEDY, use_tqdm=False)
    llama_llm.stop_profile()
    files = [f for _, _, fs in os.walk(tmp_path) for f in fs]
    assert any(f.endswith(".xplane.pb") for f in files), files
    with pytest.raises(RuntimeError, match="without start_profile"):
        llama_llm.stop_profile()
    assert llama_llm.get_world_size() == 1 and llama_llm.get_world_size(include_dp=False) == 1


def test_set_tokenizer(llama_llm):
    original = llama_llm.get_tokenizer()

    class Shouting:
        """The same tokenizer, encoding text in upper case: what the prompts' ids must now come from."""

        def __init__(self, tok):
            self.tok = tok

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def __call__(self, text, **kw):
            return self.tok(text.upper(), **kw)

        def __len__(self):
            return len(self.tok)

    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    try:
        llama_llm.set_tokenizer(Shouting(original))
        assert isinstance(llama_llm.get_tokenizer(), Shouting)
        out = llama_llm.generate("Hello world", params, use_tqdm=False)[0]
    finally:
        llama_llm.set_tokenizer(original)
    assert out.prompt_token_ids == original("HELLO WORLD").input_ids != original("Hello world").input_ids
    assert out.outputs[0].text == original.decode(out.outputs[0].token_ids)
    assert llama_llm.llm_engine.get_tokenizer() is original
