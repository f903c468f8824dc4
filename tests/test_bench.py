"""The throughput benchmark on the CPU: a tiny custom workload end to end (ours and the HF peer), and the
roofline arithmetic on a case small enough to do by hand."""

from __future__ import annotations

import json

from jaxllm.bench.main import main
from jaxllm.bench.roofline import roofline
from jaxllm.config import ModelConfig

TINY = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 512, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "max_position_embeddings": 512, "tie_word_embeddings": True}


def test_bench_runs_and_reports(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "result.json"
    result = main(["--config", str(cfg), "--num-requests", "3", "--prompt-len", "4", "8", "--output-len", "5", "5",
                   "--max-num-seqs", "4", "--max-num-batched-tokens", "16", "--enforce-eager", "--peer", "hf",
                   "--peer-device", "cpu", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["jaxllm"]["output_tokens"] == 15 == saved["peer_hf"]["output_tokens"]
    assert saved["jaxllm"]["output_tok_s"] > 0 and saved["roofline"]["output_tok_s"] > 0
    assert 0 < saved["pct_roofline_output"] == result["pct_roofline_output"]
    assert saved["speedup_vs_peer_output"] > 0


def test_bench_cpu_options_reach_both_sides(tmp_path):
    """--dtype sets ours and the peer's dtype; --peer-api generate runs one padded model.generate batch;
    --peer-threads sets torch's threads; the CPU workload is the default model's dims."""
    from jaxllm.bench.main import parse_args, workload_from_args

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    result = main(["--config", str(cfg), "--num-requests", "3", "--prompt-len", "4", "9", "--output-len", "5", "5",
                   "--max-num-seqs", "4", "--max-num-batched-tokens", "16", "--dtype", "float32", "--peer", "hf",
                   "--peer-device", "cpu", "--peer-api", "generate", "--peer-threads", "1"])
    peer = result["peer_hf"]
    assert peer["name"] == "transformers generate" and peer["dtype"] == "float32" and peer["torch_threads"] == 1
    assert peer["output_tokens"] == 15 == result["jaxllm"]["output_tokens"] and result["jaxllm"]["dtype"] == "float32"
    assert result["jaxllm"]["all_compiled_s"] >= result["jaxllm"]["startup_s"]
    w = workload_from_args(parse_args(["--workload", "CPU"]))
    assert w.hf_config()["hidden_size"] == 576 and w.num_requests == 8 and w.output_len == (32, 32)


def test_roofline_single_request_by_hand():
    cfg = ModelConfig.from_hf(TINY)
    r = roofline(cfg, [10], [3], max_num_seqs=4, peak_flops=1e12, bandwidth=1e9)
    body, head = cfg.num_params(include_embeddings=False), cfg.vocab_size * cfg.hidden_size
    prefill = (2 * body * 10 + 2 * 2 * 4 * 16 * 10 * 10) / 1e12
    kv_per_token = 2 * 2 * 16 * 2 * 2
    # two decode steps (the first token comes from the prefill) with contexts 10 and 11
    decode = sum(max(((body + head) * 2 + ctx * kv_per_token) / 1e9,
                     (2 * (body + head) + 4 * 2 * 4 * 16 * ctx) / 1e12) for ctx in (10, 11))
    assert abs(r["prefill_s"] - prefill) < 1e-12 and abs(r["decode_s"] - decode) < 1e-12
    assert abs(r["output_tok_s"] - 3 / (prefill + decode)) < 1e-6


def test_roofline_counts_quantized_linear_weights_at_one_byte():
    cfg = ModelConfig.from_hf(TINY)
    bf16 = roofline(cfg, [10], [3], max_num_seqs=4)
    q = roofline(cfg, [10], [3], max_num_seqs=4, linear_weight_bytes=1)
    layers, d, f = 2, 64, 128
    linear = layers * (d * (4 + 2 * 2) * 16 + 4 * 16 * d + 3 * d * f)
    assert bf16["weight_bytes"] - q["weight_bytes"] == linear
    fp8_kv = roofline(cfg, [10], [3], max_num_seqs=4, kv_dtype_bytes=1)
    assert fp8_kv["weight_bytes"] == bf16["weight_bytes"] and fp8_kv["decode_s"] < bf16["decode_s"]


def test_roofline_runs_linear_flops_at_their_own_rate():
    """fp8 W8A8: the decoder layers' linear FLOPs at ``linear_peak_flops``, attention and the rest at the bf16 peak."""
    cfg = ModelConfig.from_hf(TINY)
    base = roofline(cfg, [10], [3], max_num_seqs=4, peak_flops=1e12, bandwidth=1e20)  # compute-bound decode
    fast = roofline(cfg, [10], [3], max_num_seqs=4, peak_flops=1e12, bandwidth=1e20, linear_peak_flops=2e12)
    layers, d, f = 2, 64, 128
    linear = layers * (d * (4 + 2 * 2) * 16 + 4 * 16 * d + 3 * d * f)
    # half the linear time saved: 10 prompt tokens, then 1 token in each of 2 decode steps
    assert abs((base["prefill_s"] - fast["prefill_s"]) - 2 * linear * 10 / 2e12) < 1e-15
    assert abs((base["decode_s"] - fast["decode_s"]) - 2 * 2 * linear / 2e12) < 1e-15
    assert fast["linear_peak_flops"] == 2e12 and base["linear_peak_flops"] == 1e12


def test_gpu_busy_parsing_and_host_profile(tmp_path):
    from jaxllm.bench.monitor import host_profile, parse_utilization

    r = parse_utilization("0, 100\n1, 50\n0, 80\n1, 0\n0, 9")  # GPU 0: 100, 80, 9 -> 63; GPU 1: 50, 0 -> 25
    assert r["samples"] == 5 and r["per_gpu_mean_pct"] == [63.0, 25.0] and r["mean_pct"] == 44.0
    assert parse_utilization("")["mean_pct"] is None
    out = tmp_path / "prof.txt"
    with host_profile(str(out)):
        sum(range(1000))
    assert "function calls" in out.read_text()


def test_fp8_activations_flag_needs_fp8_weights():
    import pytest

    from jaxllm.bench.main import parse_args
    with pytest.raises(SystemExit):
        parse_args(["--workload", "B2", "--fp8-activations", "dynamic"])
    args = parse_args(["--workload", "B2", "--quantization", "fp8", "--fp8-activations", "dynamic"])
    assert args.fp8_activations == "dynamic"


def test_roofline_caps_windowed_layers_at_their_window():
    """Gemma 2 style: layer 0 windowed (4 keys), layer 1 global: the windowed layer's prefill pairs are
    4 * n - 8 instead of n^2 / 2, and a decode step reads min(ctx, 4) keys there."""
    cfg = ModelConfig.from_hf({**TINY, "architectures": ["Gemma2ForCausalLM"], "sliding_window": 4, "head_dim": 16})
    assert cfg.sliding_windows == (4, None)
    r = roofline(cfg, [10], [3], max_num_seqs=4, peak_flops=1e12, bandwidth=1e9)
    body, head = cfg.num_params(include_embeddings=False), cfg.vocab_size * cfg.hidden_size
    prefill = (2 * body * 10 + 4 * 4 * 16 * ((4 * 10 - 8) + 10 * 10 / 2)) / 1e12
    kv_per_key = 2 * 16 * 2 * 2  # one layer, K and V, 2 kv heads, bf16
    decode = sum(max(((body + head) * 2 + (4 + ctx) * kv_per_key) / 1e9,
                     (2 * (body + head) + 4 * 4 * 16 * (4 + ctx)) / 1e12) for ctx in (10, 11))
    assert abs(r["prefill_s"] - prefill) < 1e-12 and abs(r["decode_s"] - decode) < 1e-12


def test_bench_structured_compares_with_the_plain_run(tmp_path):
    from hf_models import save_tokenizer_with_template

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    save_tokenizer_with_template(tmp_path / "tok")
    result = main(["--config", str(cfg), "--num-requests", "3", "--prompt-len", "4", "8", "--output-len", "5", "5",
                   "--max-num-seqs", "4", "--max-num-batched-tokens", "16", "--enforce-eager", "--structured",
                   "--tokenizer", str(tmp_path / "tok")])
    s = result["jaxllm"]["structured"]
    assert s["output_tokens"] == 15 and s["num_aborted"] == 0 and s["ratio_vs_plain"] > 0
    assert s["grammar_compile_ms_per_schema"] > 0 and s["ttft_median_s"] > 0


def test_bench_data_parallel_counts_every_replica(tmp_path):
    from jaxllm.bench.report import _gpus

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    argv = ["--config", str(cfg), "--num-requests", "4", "--prompt-len", "4", "8", "--output-len", "5", "5",
            "--max-num-seqs", "4", "--max-num-batched-tokens", "16", "--enforce-eager", "--data-parallel-size", "2"]
    result = main(argv)
    assert result["jaxllm"]["output_tokens"] == 20
    assert result["roofline"]["num_gpus"] == 2 and _gpus(result) == 2


def test_bench_host_tier_options(tmp_path):
    """--shared-prefix over a small device cache with the host prefix cache: the prefixes hit in the host tier."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    result = main(["--config", str(cfg), "--num-requests", "6", "--prompt-len", "4", "4", "--output-len", "2", "2",
                   "--max-num-seqs", "2", "--max-num-batched-tokens", "64", "--enforce-eager", "--block-size", "8",
                   "--num-gpu-blocks-override", "12", "--shared-prefix", "48", "3", "--swap-space", "0.01",
                   "--host-prefix-cache"])
    ours = result["jaxllm"]
    assert ours["output_tokens"] == 12 and ours["swap_space"] == 0.01
    assert ours["host_prefix_cache_hits"] > 0 and ours["prefix_cache_hit_tokens"] >= 3 * 48


def test_bench_draft_model_options(tmp_path):
    """--draft-config / --draft-layers: a random draft of the workload's vocabulary (here the target's own dims
    cut to 1 layer) speculates; the presets spec-b*-draft name an existing draft config."""
    from jaxllm.bench.presets import preset_args

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    result = main(["--config", str(cfg), "--num-requests", "2", "--prompt-len", "4", "4", "--output-len", "6", "6",
                   "--max-num-seqs", "2", "--max-num-batched-tokens", "16", "--enforce-eager", "--draft-config",
                   str(cfg), "--draft-layers", "1", "--speculative-config",
                   '{"num_speculative_tokens": 4, "disable_by_batch_size": 2}'])  # every step speculates
    ours = result["jaxllm"]
    assert ours["output_tokens"] == 12
    assert ours["speculative_config"]["method"] == "draft_model" and ours["spec_decode_acceptance_rate"] is not None
    for name in ("spec-b1-draft", "spec-b16-draft", "spec-b256-draft"):
        args = preset_args(name)
        with open(args[args.index("--draft-config") + 1]) as f:
            assert json.load(f)["vocab_size"] == 128256
