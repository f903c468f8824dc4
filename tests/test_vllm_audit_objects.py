"""vLLM's documented output objects (RequestOutput / CompletionOutput: constructor, fields, ``add``), ``LLM.chat``'s
keywords and ``LLM.beam_search``'s sequences, on a tiny random Llama."""

from __future__ import annotations

import pytest
from hf_models import save_tiny_model, save_tokenizer_with_template

from jaxllm import (
    LLM,
    BeamSearchParams,
    CompletionOutput,
    Logprob,
    RequestOutput,
    RequestOutputKind,
    SamplingParams,
)

G = {"use_tqdm": False}
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit_objects")
    save_tiny_model(path, "LlamaForCausalLM", vocab_size=448, eos_token_id=0, bos_token_id=None)
    save_tokenizer_with_template(path)
    return LLM(str(path), max_num_seqs=4, max_num_batched_tokens=32, max_model_len=64, enforce_eager=True,
               enable_prefix_caching=True)


def test_constructors_take_vllms_positional_order():
    c = CompletionOutput(0, "hi", [5, 6], -1.5, None, "stop", 6)
    assert (c.finish_reason, c.stop_reason, c.finished(), c.kv_transfer_params) == ("stop", 6, True, None)
    r = RequestOutput("r", "p", [1], None, [c], True, None, None, "enc", [9], 3)
    assert (r.lora_request, r.encoder_prompt, r.encoder_prompt_token_ids, r.num_cached_tokens) == (None, "enc", [9], 3)
    assert r.kv_transfer_params is None
    c.kv_transfer_params = {"remote": 1}
    assert r.kv_transfer_params == {"remote": 1}
    assert repr(r).startswith("RequestOutput(request_id=r, prompt='p', prompt_token_ids=[1], encoder_prompt='enc'")


def test_add_aggregates_deltas_or_replaces():
    lp = {5: Logprob(-0.5, 1, "a")}
    first = RequestOutput("r", None, [1], None, [CompletionOutput(0, "a", [5], -0.5, [lp])], False)
    first.add(RequestOutput("r", None, [1], None, [CompletionOutput(0, "b", [6], -1.0, [lp], "length")], True),
              aggregate=True)
    c = first.outputs[0]
    assert (c.text, c.token_ids, len(c.logprobs), c.cumulative_logprob, c.finish_reason) == (
        "ab", [5, 6], 2, -1.0, "length")
    assert first.finished
    first.add(RequestOutput("r", None, [1], None, [CompletionOutput(0, "x", [7], None, None),
                                                   CompletionOutput(1, "y", [8], None, None)], True),
              aggregate=False)
    assert [(o.index, o.text) for o in first.outputs] == [(0, "x"), (1, "y")]


def test_generated_output_fields(llm):
    prompt, params = "a b c d e f g h i j k l", SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
    out = llm.generate(prompt, params, **G)[0]
    assert out.encoder_prompt is None and out.encoder_prompt_token_ids is None and out.kv_transfer_params is None
    assert out.lora_request is None and out.outputs[0].lora_request is None
    assert isinstance(out.num_cached_tokens, int) and out.metrics.arrival_time <= out.metrics.finished_time
    again = llm.generate(prompt, params, **G)[0]  # the prompt's full blocks now come from the prefix cache
    block = llm.engine_args.block_size
    assert 0 < again.num_cached_tokens < len(again.prompt_token_ids) and again.num_cached_tokens % block == 0
    assert again.outputs[0].token_ids == out.outputs[0].token_ids


def test_delta_outputs_add_up_to_the_final_one(llm):
    engine = llm.llm_engine
    params = SamplingParams(max_tokens=5, ignore_eos=True, seed=2, logprobs=1, output_kind=RequestOutputKind.DELTA)
    engine.add_request("delta", "a b", params)
    merged = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            if merged is None:
                merged = out
            else:
                merged.add(out, aggregate=True)
    final = llm.generate("a b", SamplingParams(max_tokens=5, ignore_eos=True, seed=2, logprobs=1), **G)[0]
    got, want = merged.outputs[0], final.outputs[0]
    assert merged.finished and (got.token_ids, got.text) == (want.token_ids, want.text)
    assert [list(d) for d in got.logprobs] == [list(d) for d in want.logprobs]


def test_chat_keywords(llm):
    convs = [USER, [{"role": "user", "content": "yo"}]]
    outs = llm.chat(convs, SamplingParams(max_tokens=1), **G)
    assert [o.prompt for o in outs] == ["<user>hi<eos><assistant>", "<user>yo<eos><assistant>"]
    assert llm.chat(USER, SamplingParams(max_tokens=1), add_generation_prompt=False, **G)[0].prompt == "<user>hi<eos>"
    msgs = USER + [{"role": "assistant", "content": "the start"}]
    out = llm.chat(msgs, SamplingParams(max_tokens=1), add_generation_prompt=False, continue_final_message=True, **G)
    assert out[0].prompt == "<user>hi<eos><assistant>the start"  # the final message stays open
    with pytest.raises(ValueError, match="continue_final_message"):
        llm.chat(msgs, SamplingParams(max_tokens=1), continue_final_message=True, **G)
    template = "{{ greeting }}{% for t in tools or [] %}[{{ t['function']['name'] }}]{% endfor %}" \
               "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    out = llm.chat(USER, SamplingParams(max_tokens=1), chat_template=template,
                   chat_template_kwargs={"greeting": "Hello:"}, tools=tools, **G)
    assert out[0].prompt == "Hello:[lookup]hi"


def test_beam_search_sequences(llm):
    tok = llm.get_tokenizer()
    prompts = ["a b", {"prompt": "c"}, tok("x y").input_ids]  # text, TextPrompt, token ids
    outs = llm.beam_search(prompts, BeamSearchParams(beam_width=2, max_tokens=3, ignore_eos=True))
    assert len(outs) == 3
    for out, prompt in zip(outs, ["a b", "c", "x y"]):
        ids = tok(prompt).input_ids
        seqs = out.sequences
        assert len(seqs) == 2 and seqs[0].cum_logprob >= seqs[1].cum_logprob  # best first
        for s in seqs:
            assert s.tokens[:len(ids)] == ids and len(s.tokens) == len(ids) + 3  # tokens hold the prompt
            assert s.text == tok.decode(s.tokens, skip_special_tokens=True)
            assert len(s.logprobs) == 3
            for d, t in zip(s.logprobs, s.tokens[len(ids):]):
                assert t in d and all(lp.decoded_token == tok.decode([i]) for i, lp in d.items())


def test_vllm_module_names_import():
    """A script ported by changing ``vllm`` to ``jaxllm`` finds the names in vLLM's modules."""
    import jaxllm
    from jaxllm import EngineArgs, LLMEngine  # noqa: F401  (``from vllm import LLM, EngineArgs`` in its examples)
    from jaxllm.inputs import PromptType, TextPrompt, TokensPrompt  # noqa: F401
    from jaxllm.logprobs import FlatLogprobs, PromptLogprobs, SampleLogprobs  # noqa: F401
    from jaxllm.logprobs import Logprob as LogprobFromLogprobs
    from jaxllm.outputs import ClassificationRequestOutput, EmbeddingRequestOutput, PoolingRequestOutput
    from jaxllm.sampling_params import StructuredOutputsParams  # noqa: F401

    assert LogprobFromLogprobs is Logprob is jaxllm.Logprob
    assert (EmbeddingRequestOutput, ClassificationRequestOutput, PoolingRequestOutput) == (
        jaxllm.EmbeddingRequestOutput, jaxllm.ClassificationRequestOutput, jaxllm.PoolingRequestOutput)
    assert issubclass(EmbeddingRequestOutput, PoolingRequestOutput)
