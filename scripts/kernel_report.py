"""The Markdown table of ``scripts/bench_kernels.py``'s results (benchmarks/kernels/attention_<tag>.md)."""

from __future__ import annotations


def _fa3_cell(row) -> str:
    """JAX's Mosaic GPU FlashAttention-3 on the same dense inputs: TFLOP/s, or why it did not run."""
    if "mgpu_fa3_TFLOPs" in row:
        return f"{row['mgpu_fa3_TFLOPs']:.0f}"
    return row.get("mgpu_fa3_error", "not run")[:80].replace("|", "/")


def write_markdown(results, path):
    L = [f"# Kernel benchmarks ({results['device']})", "",
         (f"jax {results['jax']}; ceilings measured in the same run: elementwise read+write "
          f"{results['ceilings']['elementwise_rw_TBps']:.2f} TB/s, bf16 matmul "
          f"{results['ceilings']['matmul_bf16_TFLOPs']:.0f} TFLOP/s."), "",
         "## Decode (32 q / 8 kv heads, D=128, bf16, block 16; effective KV read)", "",
         "| B | ctx | ours µs | ours TB/s | JAX Pallas µs | TB/s | ×JAX | XLA ref µs | ×XLA |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in results["decode"]:
        L.append(f"| {r['B']} | {r['ctx']} | {r['ours_us']:.0f} | {r['ours_TBps']:.2f} | "
                 f"{r.get('jax_pallas_us', float('nan')):.0f} | {r.get('jax_pallas_TBps', float('nan')):.2f} | "
                 f"{r.get('speedup_vs_jax_pallas', float('nan')):.2f} | {r.get('xla_ref_us', float('nan')):.0f} | "
                 f"{r.get('speedup_vs_xla_ref', float('nan')):.2f} |")
    L += ["", "## Prefill (causal, 32/8 heads, D=128, bf16; ours reads K/V from pages)", "",
          ("| seqs × len | ours (Triton) µs | TFLOP/s | ours (Mosaic GPU, Hopper) µs | TFLOP/s | cuDNN dense µs | "
           "cuDNN TFLOP/s | Triton/cuDNN | JAX Mosaic GPU FA3 dense fp16 TFLOP/s |"),
          "|---|---|---|---|---|---|---|---|---|"]
    for r in results["prefill"]:
        mosaic = (f"{r['mosaic_us']:.0f} | {r['mosaic_TFLOPs']:.0f}" if "mosaic_TFLOPs" in r
                  else f"failed: {r['mosaic_error'][:60]} | " if "mosaic_error" in r else "- | -")
        L.append(f"| {r['seqs']} × {r['len']} | {r['ours_us']:.0f} | {r['ours_TFLOPs']:.0f} | {mosaic} | "
                 f"{r.get('cudnn_us', float('nan')):.0f} | {r.get('cudnn_TFLOPs', float('nan')):.0f} | "
                 f"{r.get('ours_vs_cudnn', float('nan')):.2f} | {_fa3_cell(r)} |")
    seq_rows = [r for r in results["prefill"] if "ours_seq_pages_us" in r]
    if seq_rows:
        L += ["", "Same shapes with each sequence's pages in pool order (as the engine allocates a fresh prompt) instead "
              "of shuffled: " + "; ".join(
                  f"{r['seqs']} × {r['len']}: Triton {r['ours_seq_pages_us']:.0f} µs"
                  + (f", Mosaic {r['mosaic_seq_pages_us']:.0f} µs" if "mosaic_seq_pages_us" in r else "")
                  for r in seq_rows) + "."]
    m = results.get("mixed")
    if m:
        L += ["", "## Mixed batch", "",
              (f"{m['decodes']} decodes (ctx {m['decode_ctx']}) + one {m['prefill_chunk']}-token prefill chunk: "
               f"{m['mixed_us']:.0f} µs vs {m['decode_us']:.0f} + {m['prefill_us']:.0f} µs apart "
               f"(ratio {m['mixed_over_sum']:.2f}).")]
    L += ["", "## write_kv_cache (jit, cache donated)", "", "| tokens | µs | cache GB | a cache copy would take µs |",
          "|---|---|---|---|"]
    for r in results.get("write_kv_cache", []):
        L.append(f"| {r['tokens']} | {r['us']:.1f} | {r['cache_GB']:.1f} | "
                 f"{r['copy_of_cache_would_take_us_at_4TBps']:.0f} |")
    if results.get("fp8_kv"):
        L += ["", "## fp8 KV cache (32/8 heads, D=128, block 16, scales 1.0; TB/s counts the bytes stored)", "",
              "| kind | kv | shape | config | µs | rate | × bf16 |", "|---|---|---|---|---|---|---|"]
        for r in results["fp8_kv"]:
            shape = (f"B={r['B']} ctx={r['ctx']}" if r["kind"] == "decode" else
                     f"{r['seqs']}×{r['len']}" if r["kind"] == "prefill" else f"{r['tokens']} tokens")
            rate = (f"{r['TBps']:.2f} TB/s" if "TBps" in r else f"{r['TFLOPs']:.0f} TFLOP/s" if "TFLOPs" in r
                    else r.get("error", ""))
            L.append(f"| {r['kind']} | {r['kv']} | {shape} | {r.get('config', '')} | {r.get('us', float('nan')):.0f} "
                     f"| {rate} | {r.get('speedup_vs_bf16', float('nan')):.2f} |")
    if results.get("sweep"):
        L += ["", "## Tile sweep", "", "| kind | shape | config | µs | rate |", "|---|---|---|---|---|"]
        for r in results["sweep"]:
            shape = f"B={r['B']} ctx={r['ctx']}" if r["kind"] == "decode" else f"1×{r['len']}"
            rate = f"{r['TBps']:.2f} TB/s" if "TBps" in r else (f"{r['TFLOPs']:.0f} TFLOP/s" if "TFLOPs" in r
                                                               else r.get("error", ""))
            L.append(f"| {r['kind']} | {shape} | {r['cfg']} | {r.get('us', float('nan')):.0f} | {rate} |")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
