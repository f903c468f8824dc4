"""DeepSeek-V2 / V3 under tensor_parallel_size=4 on fake CPU devices: MLA heads split (q_b / kv_b / o_proj by
heads, the latent projections replicated; or the latent cache, one head replicated), the experts split by ffn dim or whole (enable_expert_parallel), the
shared experts and dense MLPs like any MLP. Logits within fp32 tolerance of one device, identical greedy tokens."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from deepseek_models import V2, V3, save_deepseek

import jaxllm
from jaxllm import LLM, SamplingParams

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")


_SAVED: dict = {}


def saved(arch, tmp_path_factory):
    if arch not in _SAVED:
        _SAVED[arch] = tmp_path_factory.mktemp(arch)
        extra = {"topk_method": "group_limited_greedy"} if arch == V2 else {}
        save_deepseek(_SAVED[arch], arch, **extra)
    return _SAVED[arch]


@pytest.fixture(params=[V2, V3])
def checkpoint(request, tmp_path_factory):
    return saved(request.param, tmp_path_factory)


@pytest.mark.parametrize("expert_parallel", [False, True])
def test_dense_logits_match_one_device(checkpoint, expert_parallel):
    ids = (np.arange(40, dtype=np.int32).reshape(2, 20) * 7) % 256
    ref = np.asarray(jaxllm.load_model(checkpoint)(ids))
    model = jaxllm.load_model(checkpoint, tensor_parallel_size=4, enable_expert_parallel=expert_parallel)
    attn = model.layers[1].self_attn
    assert attn.kv_b_proj[...].addressable_shards[0].data.shape == (32, 1, 32)  # [Rkv, H/4, Dn + Dv]
    assert attn.kv_a_proj_with_mqa[...].addressable_shards[0].data.shape == (64, 40)  # replicated
    assert np.abs(np.asarray(model(ids)) - ref).max() / np.abs(ref).max() <= 1e-5


@pytest.mark.parametrize("backend", [None, "chunked"])
def test_engine_greedy_tokens_match_one_device(backend, tmp_path_factory):
    """Per-head K / V split by heads with expert parallelism; the latent cache ("chunked": one head, replicated on
    every device next to its H/N query heads) with the experts' ffn dims split."""
    checkpoint = saved(V3, tmp_path_factory)
    prompts = [{"prompt_token_ids": list(range(1, n))} for n in (30, 8, 17)]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)

    def run(**kw):
        llm = LLM(str(checkpoint), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
                  enforce_eager=True, attention_backend=backend, **kw)
        return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]

    assert run(tensor_parallel_size=4, enable_expert_parallel=backend is None) == run()
