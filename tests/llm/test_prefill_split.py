"""Steps with a long prefill get their own forward programs when the attention implementation splits prefills by
length (``ops.paged_attention.prefill_split``: under ``pallas_mosaic`` the Mosaic GPU prefill takes sequences of
>= 2048 new tokens on Hopper); every other step keeps programs without that path. On CPU the split is replaced by
two jnp implementations, so the test checks the runner's program choice and that tokens do not change."""

from __future__ import annotations

from jaxllm.ops import paged_attention

from jaxllm import LLM, SamplingParams

PARAMS = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
PROMPTS = [{"prompt_token_ids": list(range(3, 23))}, {"prompt_token_ids": [5, 9, 13]}]


def generate(llm):
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, PARAMS, use_tqdm=False)]


def test_prefill_split_follows_the_chosen_implementation(monkeypatch):
    assert paged_attention.prefill_split() is None
    assert paged_attention.prefill_split("pallas_triton") is None
    assert paged_attention.prefill_split("pallas_mosaic") == ("pallas_triton", "pallas_mosaic", 2048)
    monkeypatch.setenv("JAXLLM_ATTENTION_IMPL", "pallas_mosaic")
    assert paged_attention.prefill_split() == ("pallas_triton", "pallas_mosaic", 2048)


def test_long_prefill_steps_take_their_own_programs(llama_dir, llama_llm, monkeypatch):
    want = generate(llama_llm)  # the shared LLM of the same checkpoint: one implementation for every step
    monkeypatch.setattr(paged_attention, "prefill_split", lambda impl=None: ("reference", "chunked", 8))
    llm = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=32, skip_tokenizer_init=True)
    runner = llm.llm_engine.runner
    used = []
    get = runner._get_compiled
    monkeypatch.setattr(runner, "_get_compiled", lambda key: used.append(key) or get(key))
    assert generate(llm) == want
    long_buckets = {k[1] for k in runner._compiled if k[0] == "forward" and k[3]}
    assert long_buckets == {b for b in runner.ladder.buckets if b.num_tokens >= 8} != set()
    forward_keys = [k for k in used if k[0] == "forward"]
    assert forward_keys[0][3] and not forward_keys[-1][3]  # the 20-token prefill step, then decode steps
    assert (runner._attention_impl(True), runner._attention_impl(False)) == ("chunked", "reference")
