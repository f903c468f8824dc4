"""Engine side of multi-LoRA (no jax): at most ``max_loras`` adapters per step, skipped requests keep their
order, and prefix-cache hashes depend on the adapter."""

from __future__ import annotations

import pytest

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


def test_slot_table_lru_and_adapter_store():
    from jaxllm.lora.cache import AdapterStore, SlotTable

    table = SlotTable(2)
    assert table.assign([7, 8]) == ({7: 1, 8: 2}, [(7, 1), (8, 2)])
    assert table.assign([8]) == ({8: 2}, [])  # 7 is now the least recently used
    assert table.assign([9, 8]) == ({9: 1, 8: 2}, [(9, 1)])  # 9 takes 7's slot, never 8's (in this step)
    loaded = []
    store = AdapterStore(2, lambda r: loaded.append(r.lora_int_id) or r.lora_int_id)
    reqs = [LoRARequest(f"a{i}", i, f"/p{i}") for i in (1, 2, 3)]
    for r in (*reqs, reqs[0]):
        store.check(r)
    assert loaded == [1, 2, 3, 1] and 1 in store and 2 not in store  # 1 was evicted by 3, then read again
    with pytest.raises(ValueError, match="lora_int_id=2 is already used"):
        store.check(LoRARequest("other", 2, "/elsewhere"))
