"""Steps with a long prefill get their own forward programs when the attention implementation splits prefills by
length (``ops.paged_attention.prefill_split``: under ``pallas_mosaic`` the Mosaic GPU prefill takes sequences of
>= 2048 new tokens on Hopper); every other step keeps programs without that path. On CPU the split is replaced by
two jnp implementations, so the test checks the runner's program choice and that tokens do not change."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jaxllm.ops import paged_attention
from jaxllm.ops.paged_attention import dispatch

from jaxllm import LLM, SamplingParams
from jaxllm.runner.programs import ForwardKey

PARAMS = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
PROMPTS = [{"prompt_token_ids": list(range(3, 23))}, {"prompt_token_ids": [5, 9, 13]}]


def generate(llm):
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, PARAMS, use_tqdm=False)]


def test_prefill_split_follows_the_chosen_implementation(monkeypatch):
    split = ("pallas_triton", "pallas_mosaic", 2048)
    assert paged_attention.prefill_split() is None  # CPU: chunked
    assert paged_attention.prefill_split("pallas_triton") is None
    assert paged_attention.prefill_split("pallas_mosaic") == split
    q = jax.ShapeDtypeStruct((1, 32, 128), jnp.bfloat16)
    cache = jax.ShapeDtypeStruct((2, 64, 16, 8, 128), jnp.bfloat16)
    for cc, want in (((9, 0), split), ((8, 0), None), ((8, 9), None), ((10, 0), None)):
        monkeypatch.setattr(dispatch, "gpu_compute_capability", lambda cc=cc: cc)
        assert paged_attention.prefill_split(None, q, cache) == want, cc
    # Hopper, but shapes the Mosaic prefill does not cover: no long-prefill programs
    assert paged_attention.prefill_split(None, q, cache, sliding_window=4096) is None
    assert paged_attention.prefill_split(None, q, cache.update(dtype=jnp.float8_e4m3fn)) is None
    assert paged_attention.prefill_split(None, q.update(shape=(1, 32, 256)),
                                         cache.update(shape=(2, 64, 16, 8, 256))) is None
    assert paged_attention.prefill_split("pallas_triton", q, cache) is None  # asked for: no split


def test_long_prefill_steps_take_their_own_programs(llama_dir, llama_llm, monkeypatch):
    want = generate(llama_llm)  # the shared LLM of the same checkpoint: one implementation for every step
    monkeypatch.setattr(paged_attention, "prefill_split", lambda *a, **k: ("reference", "chunked", 8))
    llm = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=32, skip_tokenizer_init=True,
              background_compile=False)  # every start-up program compiled before LLM returns
    runner = llm.llm_engine.runner
    used = []
    get = runner.programs.get
    monkeypatch.setattr(runner.programs, "get", lambda key: used.append(key) or get(key))
    assert generate(llm) == want
    long_buckets = {k.bucket for k in runner.programs.compiled if isinstance(k, ForwardKey) and k.long_prefill}
    assert long_buckets == {b for b in runner.ladder.buckets if b.num_tokens >= 8} != set()
    forward_keys = [k for k in used if isinstance(k, ForwardKey)]
    assert forward_keys[0].long_prefill and not forward_keys[-1].long_prefill  # the 20-token prefill, then decodes
    assert (runner.kernels.attention(True).impl, runner.kernels.attention(False).impl) == ("chunked", "reference")


def test_default_long_prefill_that_does_not_compile_falls_back(llama_dir, llama_llm, monkeypatch, caplog):
    """A jax whose Mosaic GPU cannot lower the prefill must not stop the engine when Mosaic was only the default:
    the long-prefill programs are dropped with a warning and every step runs the other programs. When asked for,
    the error is raised."""
    from jaxllm.runner import model_runner

    want = generate(llama_llm)
    monkeypatch.setattr(paged_attention, "prefill_split", lambda *a, **k: ("reference", "chunked", 8))
    compile_ = model_runner.ModelRunner._compile

    def failing_compile(self, key):
        if isinstance(key, ForwardKey) and key.long_prefill:
            raise RuntimeError("Mosaic GPU lowering failed\nmore")
        return compile_(self, key)

    monkeypatch.setattr(model_runner.ModelRunner, "_compile", failing_compile)
    with caplog.at_level("WARNING", logger="jaxllm"):
        llm = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=32, skip_tokenizer_init=True)
    runner = llm.llm_engine.runner
    assert "the chunked prefill does not compile here (RuntimeError: Mosaic GPU lowering failed)" in caplog.text
    assert runner.kernels.prefill_split is None and runner.kernels.impl == "reference"
    assert not [k for k in runner.programs.compiled if isinstance(k, ForwardKey) and k.long_prefill]
    assert generate(llm) == want
    with pytest.raises(RuntimeError, match="Mosaic GPU lowering failed"):
        LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=32, skip_tokenizer_init=True,
            attention_backend="chunked")


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 (fake) devices")
def test_hopper_default_splits_on_one_device_and_keeps_triton_under_tensor_parallelism(tmp_path, monkeypatch):
    """The Mosaic GPU prefill has not run inside shard_map on a GPU: under tensor parallelism the default stays
    the Triton kernels (explicitly, so the model's own default cannot pick Mosaic), unless asked for."""
    from hf_models import save_tiny_model

    monkeypatch.setattr(dispatch, "gpu_compute_capability", lambda: (9, 0))  # shapes only: nothing compiles
    save_tiny_model(tmp_path, "LlamaForCausalLM", hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=64)
    kw = {"dtype": "bfloat16", "skip_tokenizer_init": True, "max_num_seqs": 2, "max_num_batched_tokens": 32,
          "enforce_eager": True}
    one = LLM(str(tmp_path), **kw).llm_engine.runner
    assert one.kernels.prefill_split == ("pallas_triton", "pallas_mosaic", 2048) and one.kernels.impl is None
    two = LLM(str(tmp_path), tensor_parallel_size=2, **kw).llm_engine.runner
    assert two.kernels.prefill_split is None and two.kernels.impl == "pallas_triton"
    asked = LLM(str(tmp_path), tensor_parallel_size=2, attention_backend="pallas_mosaic", **kw).llm_engine.runner
    assert asked.kernels.prefill_split == ("pallas_triton", "pallas_mosaic", 2048)
