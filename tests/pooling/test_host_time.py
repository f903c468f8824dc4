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
