"""Tensor parallelism for Gemma 1/2/3, Phi-3 and OLMo 2 on 4 fake CPU devices: TP=4 dense logits within fp32
tolerance of TP=1 (split q/k/v of Phi-3's fused qkv_proj, OLMo 2's q/k norms over sharded heads, kv heads
replicated when TP > kv heads) and TP=2 greedy tokens on the paged engine identical to TP=1."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hf_models import save_tiny_model

import jaxllm
from jaxllm import LLM, SamplingParams

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
CASES = {
    "gemma-mqa": ("GemmaForCausalLM", {"head_dim": 16, "num_key_value_heads": 1}),
    "gemma2-softcap-window": ("Gemma2ForCausalLM", {"head_dim": 16, "sliding_window": 6,
                                                    "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
    "gemma3-local-global": ("Gemma3ForCausalLM", {"head_dim": 16, "sliding_window": 5, "sliding_window_pattern": 2}),
    "phi3-fused-8q-4kv": ("Phi3ForCausalLM", {**SPECIAL, "num_attention_heads": 8, "num_key_value_heads": 4}),
    "olmo2-full-qk-norm": ("Olmo2ForCausalLM", SPECIAL),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    arch, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    save_tiny_model(path, arch, **overrides)
    return path


def test_dense_logits_tp4_match_tp1(checkpoint):
    ids = (np.arange(40, dtype=np.int32).reshape(2, 20) * 7) % 256
    ref = np.asarray(jaxllm.load_model(checkpoint)(ids))
    model = jaxllm.load_model(checkpoint, tensor_parallel_size=4)
    assert model.layers[0].self_attn.q_proj[...].sharding.mesh.devices.size == 4
    out = np.asarray(model(ids))
    assert np.abs(out - ref).max() / np.abs(ref).max() <= 1e-5


def test_engine_greedy_tp2_matches_tp1(checkpoint):
    prompts = [{"prompt_token_ids": list(range(3, n))} for n in (30, 9, 17)]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)

    def run(tp):
        llm = LLM(str(checkpoint), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
                  enforce_eager=True, tensor_parallel_size=tp)
        return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]

    assert run(2) == run(1)
