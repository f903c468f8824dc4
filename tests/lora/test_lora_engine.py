"""Engine side of multi-LoRA (no jax): at most ``max_loras`` adapters per step, skipped requests keep their
order, and prefix-cache hashes depend on the adapter."""

from __future__ import annotations

from jaxllm.engine.block_manager import BlockManager
from jaxllm.engine.scheduler import Scheduler
from jaxllm.engine.sequence import Sequence
from jaxllm.lora import LoRARequest
from jaxllm.sampling_params import SamplingParams


def seq(seq_id, lora_id, prompt=(1, 2, 3, 4, 5, 6, 7, 8, 9)):
    lora = LoRARequest(f"a{lora_id}", lora_id, "/nowhere") if lora_id else None
    return Sequence(seq_id, str(seq_id), 0, list(prompt), SamplingParams(max_tokens=4), max_tokens=4, rng_seed=0,
                    eos_token_ids=frozenset(), stop_token_ids=frozenset(), banned_token_ids=(),
                    want_prompt_logprobs=False, lora_request=lora)


def test_at_most_max_loras_adapters_per_step():
    sched = Scheduler(BlockManager(64, 4, True), max_num_seqs=8, max_num_batched_tokens=256, max_model_len=64,
                      max_loras=2)
    for i, lora_id in enumerate([1, 2, 3, 0, 1, 3]):
        sched.add(seq(i, lora_id))
    batch = sched.schedule()
    assert [s.seq_id for s in batch.seqs] == [0, 1, 3, 4]  # adapter 3 waits; the base model never does
    assert {s.lora_request.lora_int_id for s in batch.seqs if s.lora_request} == {1, 2}
    assert [s.seq_id for s in sched.waiting] == [2, 5]  # in their order


def test_prefix_hashes_depend_on_the_adapter():
    bm = BlockManager(64, 4, True)
    hashes = {}
    for lora_id in (0, 1, 2):
        s = seq(lora_id, lora_id)
        hashes[lora_id] = bm._hash_blocks(s, 2)
    assert len({tuple(h) for h in hashes.values()}) == 3
    assert bm._hash_blocks(seq(9, 1), 2) == hashes[1]
