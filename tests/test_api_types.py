"""vLLM's API types: SamplingParams' newer fields and from_optional, jaxllm.inputs' TypedDicts, FlatLogprobs,
and the chat message handling (content parts, the template's content format); no jax, no model."""

from __future__ import annotations

import pytest

from jaxllm import chat_utils
from jaxllm.outputs import FlatLogprobs, Logprob
from jaxllm.sampling_params import RequestOutputKind, SamplingParams


def test_sampling_params_new_fields():
    p = SamplingParams(truncate_prompt_tokens=-1, output_kind=RequestOutputKind.DELTA, extra_args={"k": [1]},
                       flat_logprobs=True)
    assert (p.truncate_prompt_tokens, p.output_kind, p.extra_args, p.flat_logprobs) == (
        -1, RequestOutputKind.DELTA, {"k": [1]}, True)
    assert p.clone().extra_args == {"k": [1]}
    assert SamplingParams().output_kind == RequestOutputKind.CUMULATIVE  # vLLM's default
    for bad, exc, match in [
        ({"truncate_prompt_tokens": 0}, ValueError, "positive integer or -1"),
        ({"truncate_prompt_tokens": -5}, ValueError, "positive integer or -1"),
        ({"truncate_prompt_tokens": 2.0}, TypeError, "truncate_prompt_tokens"),
        ({"output_kind": "delta"}, TypeError, "output_kind"),
        ({"extra_args": ["x"]}, TypeError, "extra_args"),
        ({"flat_logprobs": "yes"}, TypeError, "flat_logprobs"),
    ]:
        with pytest.raises(exc, match=match):
            SamplingParams(**bad)


def test_from_optional():
    p = SamplingParams.from_optional(n=None, temperature=None, top_p=None, presence_penalty=None,
                                     frequency_penalty=None, repetition_penalty=None, max_tokens=None, seed=None,
                                     logit_bias={"5": 300.0, 7: -1.5})
    assert (p.n, p.temperature, p.top_p, p.presence_penalty, p.repetition_penalty) == (1, 1.0, 1.0, 0.0, 1.0)
    assert p.max_tokens is None and p.seed is None  # None kept: no limit, no seed
    assert p.logit_bias == {5: 100.0, 7: -1.5}  # keys to ints, clamped to [-100, 100]
    assert SamplingParams.from_optional(temperature=0.5, max_tokens=3).max_tokens == 3
    with pytest.raises(TypeError, match="unexpected keyword.*best_of_n"):
        SamplingParams.from_optional(best_of_n=2)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams.from_optional(top_p=1.5)


def test_inputs_typed_dicts():
    from jaxllm.inputs import PromptType, TextPrompt, TokensPrompt

    t: TextPrompt = TextPrompt(prompt="hi")
    k: TokensPrompt = TokensPrompt(prompt_token_ids=[1, 2])
    assert t == {"prompt": "hi"} and k == {"prompt_token_ids": [1, 2]}
    assert TokensPrompt.__required_keys__ == frozenset({"prompt_token_ids"})
    assert PromptType is not None


def test_flat_logprobs_sequence():
    positions = [None, {3: Logprob(-0.5, 1, "a"), 9: Logprob(-1.5, 2, "b")}, {4: Logprob(-0.1, 1, None)}]
    flat = FlatLogprobs.from_positions(positions)
    assert len(flat) == 3 and flat[0] == {} and flat[1] == positions[1] and flat[-1] == positions[2]
    assert flat.token_ids == [3, 9, 4] and flat.start_indices == [0, 0, 2] and flat.end_indices == [0, 2, 3]
    assert isinstance(flat[1:], FlatLogprobs) and list(flat[1:]) == positions[1:]
    with pytest.raises(TypeError, match="append-only"):
        flat[0] = {}


# ---- chat messages ---------------------------------------------------------------------------------------

STRING_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
OPENAI_TEMPLATE = ("{% for m in messages %}{{ m.role }}:{% for part in m.content %}{% if part.type == 'text' %}"
                   "[{{ part.text }}]{% endif %}{% endfor %}\n{% endfor %}")


def test_content_format_detection():
    assert chat_utils.resolve_content_format("auto", STRING_TEMPLATE) == "string"
    assert chat_utils.resolve_content_format("auto", OPENAI_TEMPLATE) == "openai"
    assert chat_utils.resolve_content_format("auto", None) == "string"
    assert chat_utils.resolve_content_format("openai", STRING_TEMPLATE) == "openai"
    with pytest.raises(ValueError, match="chat_template_content_format='xml'"):
        chat_utils.resolve_content_format("xml", STRING_TEMPLATE)


def test_normalize_messages():
    conv = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, "b", {"type": "input_text", "text": "c"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]
    as_string = chat_utils.normalize_messages(conv, "string")
    assert [m["content"] for m in as_string] == ["Be brief.", "a\nb\nc", ""]
    as_parts = chat_utils.normalize_messages(conv, "openai")
    assert as_parts[0]["content"] == [{"type": "text", "text": "Be brief."}]
    assert as_parts[1]["content"] == [{"type": "text", "text": t} for t in "abc"]
    assert as_parts[2]["tool_calls"] == [{"id": "1"}] and conv[1]["content"][1] == "b"  # input untouched


@pytest.mark.parametrize("conv, match", [
    ([{"content": "x"}], "message 0: 'role'"),
    ([{"role": "user", "content": "x"}, {"role": "user", "content": None}], "message 1 .*'content' is missing"),
    ([{"role": "user"}], "message 0 .*'content' is missing"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "message 0, part 0: content parts of type 'image_url' are not supported"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "'input_audio'"),
    ([{"role": "user", "content": [{"type": "text"}]}], "needs a str 'text'"),
    ([{"role": "user", "content": 5}], "message 0: 'content' must be a str or a list"),
])
def test_malformed_messages(conv, match):
    with pytest.raises(ValueError, match=match):
        chat_utils.normalize_messages(conv, "string")


def test_conversations_batch():
    one = [{"role": "user", "content": "hi"}]
    assert chat_utils.as_conversations(one) == [one]
    assert chat_utils.as_conversations([one, one]) == [one, one]
    with pytest.raises(TypeError, match="conversation 1"):
        chat_utils.as_conversations([one, "hi"])
