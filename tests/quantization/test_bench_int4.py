"""``jaxllm bench --quantization awq|gptq`` on the CPU: random packed 4-bit weights (group 128) of a small
config, end to end, and the roofline's bytes per 4-bit weight."""

from __future__ import annotations

import json

import pytest

from jaxllm.bench.main import main
from jaxllm.model_size import linear_weight_bytes

SMALL = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512, "hidden_size": 128,
         "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 512}


@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_bench_int4_dummy(tmp_path, method):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(SMALL))
    result = main(["--config", str(cfg), "--num-requests", "2", "--prompt-len", "4", "8", "--output-len", "3", "3",
                   "--max-num-seqs", "2", "--max-num-batched-tokens", "16", "--enforce-eager",
                   "--quantization", method])
    assert result["jaxllm"]["output_tokens"] == 6 and result["jaxllm"]["output_tok_s"] > 0
    assert result["roofline"]["weight_bytes"] > 0


def test_linear_weight_bytes():
    assert linear_weight_bytes(None) == 2 and linear_weight_bytes("fp8") == 1
    assert linear_weight_bytes("awq") == linear_weight_bytes("gptq") == 0.5 + 3 / 128
    with pytest.raises(ValueError, match="no weight size for quantization='nf4'"):
        linear_weight_bytes("nf4")
