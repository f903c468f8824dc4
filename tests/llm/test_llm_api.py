"""LLM API: stop strings, chat template, bad input (clear errors, engine keeps working), no recompilation
during generate after warm-up, releasing memory."""

from __future__ import annotations

import gc
import re

import jax
import numpy as np
import pytest

from jaxllm import LLM, SamplingParams, StructuredOutputsParams


def test_stop_string_truncates_text(llama_llm):
    base = llama_llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
                              use_tqdm=False)[0].outputs[0]
    assert len(base.text) > 4
    stop = base.text[2:4]
    out = llama_llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=12, stop=[stop]),
                             use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == base.text[:base.text.index(stop)]
    inc = llama_llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=12, stop=[stop],
                                                           include_stop_str_in_output=True),
                             use_tqdm=False)[0].outputs[0]
    assert inc.text == base.text[:base.text.index(stop) + len(stop)]


def test_numpy_token_ids_are_accepted(llama_llm):
    """numpy integer scalars and 1-D integer arrays (what JAX/numpy code has at hand) work like lists of ints."""
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    ids = [5, 9, 13, 2]
    ref = llama_llm.generate({"prompt_token_ids": ids}, params, use_tqdm=False)[0]
    for given in (np.array(ids, np.int32), [np.int64(i) for i in ids], np.array(ids, np.uint16)):
        out = llama_llm.generate({"prompt_token_ids": given}, params, use_tqdm=False)[0]
        assert out.prompt_token_ids == ids and all(type(t) is int for t in out.prompt_token_ids)
        assert out.outputs[0].token_ids == ref.outputs[0].token_ids


def test_chat_uses_template(llama_llm):
    messages = [{"role": "user", "content": "Hi there"}]
    out = llama_llm.chat(messages, SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)[0]
    tok = llama_llm.get_tokenizer()
    assert out.prompt == "<user>Hi there<eos><assistant>"
    assert out.prompt_token_ids == tok(out.prompt, add_special_tokens=False).input_ids
    two = llama_llm.chat([messages, messages + [{"role": "assistant", "content": "Yo"}]],
                         SamplingParams(temperature=0, max_tokens=3), use_tqdm=False)
    assert len(two) == 2 and two[0].outputs[0].token_ids == out.outputs[0].token_ids[:3]


@pytest.mark.parametrize("prompts, params, error, match", [
    ([{"prompt_token_ids": []}], None, ValueError, "empty"),
    ([{"prompt_token_ids": [1, 2, 5000]}], None, ValueError, "5000"),
    ([{"prompt_token_ids": [7] * 600}], None, ValueError, "max_model_len|maximum model length"),
    (["a", "b"], [SamplingParams()], ValueError, "lengths of prompts"),
    ([3.5], None, TypeError, "prompt 1"),
    ([{"prompt_token_ids": [1, "x"]}], None, TypeError, "'x'"),
    ([{"prompt_token_ids": [1, 2.0]}], None, TypeError, "2.0"),
    ([{"prompt_token_ids": [1, True]}], None, TypeError, "True"),
    ([{"prompt_token_ids": np.array([1.0, 2.0])}], None, TypeError, "1.0"),
    ([{"prompt_token_ids": np.array([[1, 2]])}], None, TypeError, "ndarray"),
    ([{"prompt_token_ids": [np.array([3])]}], None, TypeError, r"prompt 1: .*array\(\[3\]\)"),
    ([{"prompt_token_ids": [np.True_]}], None, TypeError, "True"),
    ([{"prompt_token_ids": np.array([True, False])}], None, TypeError, "True"),
])
def test_bad_input_raises_and_engine_keeps_working(llama_llm, prompts, params, error, match):
    ok = {"prompt_token_ids": [1, 2, 3]}
    with pytest.raises(error, match=match):
        llama_llm.generate([ok] + prompts, params if params is None else [SamplingParams()] + params,
                           use_tqdm=False)
    assert not llama_llm.llm_engine.has_unfinished_requests()
    out = llama_llm.generate(ok, SamplingParams(temperature=0, max_tokens=3), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 3


def test_invalid_sampling_params():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="n must be at least 1"):
        SamplingParams(n=0)


def test_constructor_errors(llama_dir):
    path = str(llama_dir[0])
    with pytest.raises(TypeError, match="unexpected keyword argument.*max_num_sequences"):
        LLM(path, max_num_sequences=4)
    with pytest.raises(ValueError, match="quantization='awq'"):
        LLM(path, quantization="awq")
    with pytest.raises(ValueError, match="kv_cache_dtype='fp16' is not supported"):
        LLM(path, kv_cache_dtype="fp16")
    with pytest.raises(ValueError, match="runner='embedding' is not supported"):
        LLM(path, runner="embedding")
    with pytest.raises(ValueError, match="swap_space=1000000000 GiB is more than the free host memory"):
        LLM(path, swap_space=10**9)
    with pytest.raises(ValueError, match="tensor_parallel_size=.*exceeds"):
        LLM(path, tensor_parallel_size=len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="neither a local path"):
        LLM("no-such-org/no-such-model-jaxllm-test")


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    from hf_models import save_tiny_model

    save_tiny_model(tmp_path, "LlamaForCausalLM")
    with pytest.raises(ValueError, match=r"(?s)could not load a tokenizer.*skip_tokenizer_init=True"):
        LLM(str(tmp_path), enforce_eager=True)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, enforce_eager=True, max_num_seqs=2)
    assert llm.get_tokenizer() is None
    with pytest.raises(ValueError, match="skip_tokenizer_init"):
        llm.generate("text prompt", use_tqdm=False)


def test_no_compilation_during_generate_after_warm_up(llama_dir):
    llm = LLM(str(llama_dir[0]), max_num_seqs=4, max_num_batched_tokens=32)
    runner = llm.llm_engine.runner
    before = runner.num_compilations
    assert before > 0
    # each program already ran once, on all-padding steps that write nothing to the cache
    assert runner.first_run_seconds > 0
    with runner.device_lock:  # the background thread's first runs take the cache (donated) and give it back
        assert all(not np.any(np.asarray(c, np.float32)) for c in runner.kv_caches)
    prompts = [{"prompt_token_ids": list(range(1, n))} for n in (3, 20, 45, 7, 9, 60)]
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True), use_tqdm=False)
    llm.generate(prompts, SamplingParams(temperature=0.8, top_p=0.9, top_k=20, max_tokens=20, logprobs=2),
                 use_tqdm=False)
    llm.generate(prompts, SamplingParams(temperature=0.6, max_tokens=5, min_tokens=2), use_tqdm=False)
    llm.generate(prompts, [SamplingParams(temperature=0, max_tokens=5), SamplingParams(temperature=1.0)] * 3,
                 use_tqdm=False)
    # structured outputs: the grammar-bitmask sampler programs were compiled at start-up too
    so = StructuredOutputsParams(regex="[a-c]{1,6}")
    outs = llm.generate(prompts[:3], [SamplingParams(temperature=t, max_tokens=8, structured_outputs=so)
                                      for t in (0.0, 0.7, 1.0)], use_tqdm=False)
    assert all(re.fullmatch("[a-c]{1,6}", o.outputs[0].text) for o in outs), [o.outputs[0].text for o in outs]
    assert runner.num_compilations == before


def test_del_releases_device_memory_and_second_llm_works(llama_dir):
    gc.collect()
    baseline = len(jax.live_arrays())
    llm = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=16, enforce_eager=True)
    llm.generate({"prompt_token_ids": [1, 2]}, SamplingParams(max_tokens=2), use_tqdm=False)
    assert len(jax.live_arrays()) > baseline
    del llm
    gc.collect()
    assert len(jax.live_arrays()) <= baseline
    llm2 = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=16, enforce_eager=True)
    assert llm2.generate({"prompt_token_ids": [1, 2]}, SamplingParams(max_tokens=2), use_tqdm=False)
