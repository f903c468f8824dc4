"""What keeps a pooling call's host time off the device's critical path: encoder programs executed once at
start-up, the cyclic collector paused for the call, cheap per-prompt parameter copies, no per-step scan of
pooling requests for streamed outputs."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from pooling_models import encoder_hidden, save_encoder

from jaxllm import LLM, PoolingParams
from jaxllm.pooling.encoder_runner import EncoderRunner
from jaxllm.pooling.prompts import collector_paused


@pytest.mark.parametrize("enforce_eager", [False, True])
def test_encoder_programs_run_once_at_startup(tmp_path, monkeypatch, enforce_eager):
    """Without enforce_eager every length bucket's program is compiled and executed once while the LLM is built
    (first-execution costs land at start-up); with it, nothing runs before the first call."""
    model = save_encoder(tmp_path, "BertModel")
    ran: list[int] = []
    original = EncoderRunner._run_once

    def recording(self, length):
        ran.append(length)
        return original(self, length)

    monkeypatch.setattr(EncoderRunner, "_run_once", recording)
    llm = LLM(str(tmp_path), max_model_len=32, max_num_seqs=4, max_num_batched_tokens=64,
              enforce_eager=enforce_eager)
    runner = llm._encoder
    assert runner.lengths == [16, 32] and ran == ([] if enforce_eager else [16, 32])
    if not enforce_eager:
        assert set(runner._compiled) == {(16, False), (32, False)}
    ids = [7, 8, 9, 10, 11]
    out = llm.embed({"prompt_token_ids": ids}, use_tqdm=False)[0].outputs.embedding
    want = encoder_hidden(model, ids)[0].numpy()
    np.testing.assert_allclose(out, want / np.linalg.norm(want), atol=1e-4)
    assert len(ran) == (0 if enforce_eager else 2)  # a call runs the compiled program, not the warm-up


def test_collector_paused_restores_the_state():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner one leaves the outer pause alone
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's own pause is kept
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_collector_on_again_after_a_failed_call(embedder_llm):
    with pytest.raises(ValueError):
        embedder_llm.embed([[1, 2], [10 ** 6]], use_tqdm=False)
    assert gc.isenabled()
    assert embedder_llm.embed([[1, 2, 3]], use_tqdm=False)[0].outputs.embedding
    assert gc.isenabled()


def test_pooling_params_clone_is_private():
    p = PoolingParams(dimensions=8, extra_kwargs={"k": [1]})
    q = p.clone()
    assert q == p and q is not p
    q.extra_kwargs["k"].append(2)
    q.verify("embed")
    assert p.extra_kwargs == {"k": [1]} and q.extra_kwargs == {"k": [1, 2]}
    assert p.task is None and q.task == "embed" and p.normalize is None and q.normalize is True
    r = PoolingParams(returned_token_ids=[3])
    s = r.clone()
    s.returned_token_ids.append(4)
    assert r.returned_token_ids == [3]


def test_pooling_requests_are_not_streamed(embedder_llm):
    """A pooling request has one output, when it finishes: the engine never checks it for news per step."""
    engine = embedder_llm.llm_engine
    params = PoolingParams()
    params.verify("embed", embedder_llm.pooling_info)
    engine.add_request("a", [1, 2, 3], params)
    try:
        assert "a" in engine._requests and not engine._streaming
    finally:
        engine.abort_request("a")
    outs = embedder_llm.embed([[1, 2, 3], [4, 5]], use_tqdm=False)
    assert [len(o.outputs.embedding) for o in outs] == [64, 64] and not engine._streaming


def test_texts_tokenized_in_one_call(embedder_llm, monkeypatch):
    """Plain-text prompts go to the (fast) tokenizer as one list per truncation size, with the ids a call per
    text gives; token ids and invalid text keep the per-prompt path (its errors name the prompt)."""
    tok = embedder_llm.get_tokenizer()
    assert tok.is_fast
    texts = ["Hello world", "The quick brown fox jumps", "a b c d e f g h"]
    want = [tok(t).input_ids for t in texts]
    calls: list = []
    original = type(tok).__call__

    def counting(self, text, *args, **kwargs):
        calls.append(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", counting)
    outs = embedder_llm.embed([texts[0], {"prompt": texts[1]}, [5, 6, 7], texts[2]], use_tqdm=False)
    assert calls == [[texts[0], texts[1], texts[2]]]
    assert [o.prompt_token_ids for o in outs] == [want[0], want[1], [5, 6, 7], want[2]]
    calls.clear()
    cut = embedder_llm.embed(texts, truncate_prompt_tokens=4, use_tqdm=False)
    assert calls == [texts] and [o.prompt_token_ids for o in cut] == [w[-4:] for w in want]
    one = [embedder_llm.embed(t, use_tqdm=False)[0].outputs.embedding for t in texts]
    np.testing.assert_allclose([o.outputs.embedding for o in outs[::3]], [one[0], one[2]], atol=1e-6)
    calls.clear()
    with pytest.raises(ValueError, match="prompt 1"):
        embedder_llm.embed(["fine", "bad \ud800 text"], use_tqdm=False)
    assert calls == [["fine"]]
