"""The embedding benchmark on the CPU: a tiny BERT end to end (ours and the HF peer) and the FLOP count."""

from __future__ import annotations

import json

from jaxllm.bench.embed import doc_flops
from jaxllm.bench.main import main

TINY_BERT = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 128, "hidden_size": 32,
             "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
             "max_position_embeddings": 64, "type_vocab_size": 2}


def test_embed_bench_runs_and_reports(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY_BERT))
    out = tmp_path / "result.json"
    result = main(["--workload", "E-bert", "--config", str(cfg), "--num-requests", "5", "--prompt-len", "8", "20",
                   "--max-num-seqs", "4", "--max-num-batched-tokens", "64", "--enforce-eager", "--peer", "hf",
                   "--peer-device", "cpu", "--host-profile", str(tmp_path / "host.txt"), "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["jaxllm"]["path"] == "dense encoder" and saved["jaxllm"]["embedding_dim"] == 32
    assert saved["jaxllm"]["docs_s"] > 0 and saved["peer_hf"]["num_requests"] == 5
    assert 0 < saved["pct_roofline"] == result["pct_roofline"]
    assert saved["jaxllm"]["batches"] >= 2 and saved["jaxllm"]["padded_over_real"] >= 1
    assert saved["jaxllm"]["gpu_busy"] is None and "function calls" in (tmp_path / "host.txt").read_text()


def test_doc_flops_by_hand():
    t = 10
    linear = 2 * (4 * 32 * 32 + 2 * 32 * 64) * 2 * t
    attention = 2 * 4 * t * t * 4 * 8
    assert doc_flops(TINY_BERT, t) == linear + attention
    qwen = {"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128}
    lin = 64 * (4 + 4) * 16 + 4 * 16 * 64 + 3 * 64 * 128
    assert doc_flops(qwen, t) == 2 * lin * t + 0.5 * 4 * t * t * 4 * 16
