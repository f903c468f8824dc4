"""``jaxllm bench --lora-adapters``: random adapters written as PEFT does, loaded and spread over the requests."""

from __future__ import annotations

import json

from jaxllm.bench.main import main
from jaxllm.bench.presets import PRESETS

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256}


def test_bench_with_lora_adapters(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    result = main(["--config", str(cfg), "--num-requests", "5", "--prompt-len", "4", "8", "--output-len", "3", "3",
                   "--max-num-seqs", "4", "--max-num-batched-tokens", "16", "--enforce-eager",
                   "--lora-adapters", "3", "--lora-rank", "8"])
    ours = result["jaxllm"]
    assert ours["output_tokens"] == 15 and ours["lora_adapters"] == 3 and ours["lora_rank"] == 8
    assert ours["lora_slot_writes"] == 3  # each adapter put in its device slot once
    assert PRESETS["b2-lora"].baseline == "b2"
