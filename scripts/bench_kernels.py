"""Benchmark of the ragged paged attention kernels and the KV-cache write, in one invocation on one GPU.

Writes benchmarks/kernels/attention_<tag>.json and .md (``--out-dir``, ``--tag``). Measures, in the same run:
ceilings (elementwise read+write bandwidth, bf16 matmul), decode (B x context grid, 32 q / 8 kv heads, D=128,
bf16, block 16) as µs and effective KV-read TB/s against JAX's Pallas paged_attention and the XLA reference,
prefill TFLOP/s (causal FLOPs) against cuDNN's dense kernel, a mixed batch against the sum of its parts,
write_kv_cache with the cache donated, (``--sweep``) tile-shape variants of our kernel, and (``--fp8-kv``)
decode / prefill / write over a float8 KV cache (e4m3, e5m2) next to bf16 on the same shapes.

  python scripts/bench_kernels.py --sweep            # on the GPU machine
  python scripts/bench_kernels.py --fp8-kv-only      # ceilings + the fp8-cache section only (~1-2 min)
  python scripts/bench_kernels.py --quick --interpret  # CPU smoke test of the script itself
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ops.device_info import gpu_compute_capability
from ops.paged_attention import write_kv_cache
from ops.paged_attention.pallas_attention import decode_config, prefill_config, ragged_paged_attention_pallas
from ops.paged_attention.pallas_triton import TileConfig
from ops.paged_attention.reference import ragged_paged_attention_reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_timing import timeit
from kernel_report import write_markdown

HQ, HK, D, BS = 32, 8, 128, 16
DT = jnp.bfloat16


def ceilings(quick):
    n = (1 << 20) if quick else (1 << 30)
    x = jax.random.normal(jax.random.key(0), (n,), jnp.float32).astype(DT)
    t, _ = timeit(jax.jit(lambda a: a * 2), [(x,)])
    m = 256 if quick else 8192
    a = jax.random.normal(jax.random.key(1), (m, m), jnp.float32).astype(DT)
    b = jax.random.normal(jax.random.key(2), (m, m), jnp.float32).astype(DT)
    tm, _ = timeit(jax.jit(lambda p, q: p @ q), [(a, b)])
    return {"elementwise_rw_TBps": 2 * n * 2 / t / 1e12, "matmul_bf16_TFLOPs": 2 * m ** 3 / tm / 1e12}


def paged_batch(rng, q_lens, ctx_lens, copies=1, extra_blocks=0, sequential=False):
    """Random bf16 cache(s) and metadata for the given sequences; blocks drawn at random from the pool (in pool
    order with ``sequential``, as a fresh engine allocates a long prompt's blocks).
    Returns list (one per copy) of (q, kv, qsl, seq_lens, tables)."""
    pages = [-(-c // BS) for c in ctx_lens]
    width = max(pages)
    nb = sum(pages) + 1 + extra_blocks
    sets = []
    kv = jax.random.normal(jax.random.key(int(rng.integers(1 << 30))), (2, nb, BS, HK, D), jnp.float32).astype(DT)
    q = jax.random.normal(jax.random.key(int(rng.integers(1 << 30))), (sum(q_lens), HQ, D), jnp.float32).astype(DT)
    qsl = jnp.asarray(np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32))
    sl = jnp.asarray(np.asarray(ctx_lens, np.int32))
    for c in range(copies):
        perm = np.arange(nb) if sequential else rng.permutation(nb)
        tables = np.zeros((len(q_lens), width), np.int32)
        k = 0
        for i, n in enumerate(pages):
            tables[i, :n] = perm[k:k + n]
            k += n
        sets.append((q, kv if c == 0 else kv + 0, qsl, sl, jnp.asarray(tables)))
    return sets


def kv_bytes(ctx_lens, itemsize=2):
    return sum(ctx_lens) * HK * D * 2 * itemsize


def bench_decode(rng, batches, ctxs, quick, interpret, results):
    from jax.experimental.pallas.ops.gpu.paged_attention import paged_attention as jax_paged_attention
    ours = jax.jit(lambda q, kv, a, b, c: ragged_paged_attention_pallas(q, kv, a, b, c, sm_scale=D ** -0.5,
                                                                        interpret=interpret))
    ref = jax.jit(lambda q, kv, a, b, c: ragged_paged_attention_reference(q, kv, a, b, c, sm_scale=D ** -0.5))
    for bsz in batches:
        for ctx in ctxs:
            ctx_lens = [ctx] * bsz
            nbytes = kv_bytes(ctx_lens)
            copies = max(1, min(4, int(2e9 // max(nbytes, 1))))
            sets = paged_batch(rng, [1] * bsz, ctx_lens, copies=copies)
            t, c = timeit(ours, sets)
            row = {"B": bsz, "ctx": ctx, "kv_MB": nbytes / 1e6, "ours_us": t * 1e6, "ours_TBps": nbytes / t / 1e12,
                   "ours_compile_s": c, "config": str(decode_config(bsz, HK, HQ // HK, D, ctx))}
            if not interpret:
                best = None
                for ppcb in (8, 16) if (bsz, ctx) == (128, 2048) else (8,):
                    jsets = [(s[0], s[1][0].transpose(2, 0, 1, 3), s[1][1].transpose(2, 0, 1, 3), s[4], s[3])
                             for s in sets]
                    ppcb = min(ppcb, ctx // BS)
                    splits = min(16, ctx // BS // ppcb)
                    fn = jax.jit(lambda q, k, v, bt, ln, p=ppcb, ks=splits: jax_paged_attention(
                        q, k, v, bt, ln, pages_per_compute_block=p, k_splits=ks))
                    tj, _ = timeit(fn, jsets)
                    best = tj if best is None else min(best, tj)
                    del jsets
                row["jax_pallas_us"] = best * 1e6
                row["jax_pallas_TBps"] = nbytes / best / 1e12
                row["speedup_vs_jax_pallas"] = best / t
            if bsz * ctx <= 128 * 2048 * 2:
                tr, _ = timeit(ref, sets[:1])
                row["xla_ref_us"] = tr * 1e6
                row["xla_ref_TBps"] = nbytes / tr / 1e12
                row["speedup_vs_xla_ref"] = tr / t
            print("decode", row, flush=True)
            results["decode"].append(row)
            del sets


def causal_flops(lens):
    return sum(4 * HQ * D * n * (n + 1) / 2 for n in lens)


def bench_prefill(rng, shapes, interpret, results):
    ours = jax.jit(lambda q, kv, a, b, c: ragged_paged_attention_pallas(q, kv, a, b, c, sm_scale=D ** -0.5,
                                                                        interpret=interpret))
    for nseq, length in shapes:
        lens = [length] * nseq
        sets = paged_batch(rng, lens, lens)
        flops = causal_flops(lens)
        t, c = timeit(ours, sets, reps=5)
        row = {"seqs": nseq, "len": length, "ours_us": t * 1e6, "ours_TFLOPs": flops / t / 1e12,
               "ours_compile_s": c}
        if not interpret and (gpu_compute_capability() or (0,))[0] == 9:  # the Mosaic GPU prefill (Hopper)
            try:
                mosaic = jax.jit(lambda q, kv, a, b, c: ragged_paged_attention_pallas(
                    q, kv, a, b, c, sm_scale=D ** -0.5, prefill_impl="mosaic", mosaic_min_q_len=1))
                tm_, _ = timeit(mosaic, sets, reps=5)
                row["mosaic_us"], row["mosaic_TFLOPs"] = tm_ * 1e6, flops / tm_ / 1e12
            except Exception as e:  # noqa: BLE001 - recorded, the rest goes on
                row["mosaic_error"] = repr(e)[:300]
        if not interpret:  # pages in pool order, as the engine hands a fresh long prompt its blocks
            seq_sets = paged_batch(rng, lens, lens, sequential=True)
            row["ours_seq_pages_us"] = timeit(ours, seq_sets, reps=5)[0] * 1e6
            if "mosaic_us" in row:
                row["mosaic_seq_pages_us"] = timeit(mosaic, seq_sets, reps=5)[0] * 1e6
        if not interpret:
            q = jax.random.normal(jax.random.key(3), (nseq, length, HQ, D), jnp.float32).astype(DT)
            k = jax.random.normal(jax.random.key(4), (nseq, length, HK, D), jnp.float32).astype(DT)
            v = jax.random.normal(jax.random.key(5), (nseq, length, HK, D), jnp.float32).astype(DT)
            try:
                fn = jax.jit(lambda a, b, cc: jax.nn.dot_product_attention(a, b, cc, is_causal=True,
                                                                           implementation="cudnn"))
                tc, _ = timeit(fn, [(q, k, v)], reps=5)
                row["cudnn_us"] = tc * 1e6
                row["cudnn_TFLOPs"] = flops / tc / 1e12
                row["ours_vs_cudnn"] = tc / t
            except Exception as e:  # noqa: BLE001 - record why cuDNN could not run
                row["cudnn_error"] = repr(e)[:300]
            try:  # JAX's own FlashAttention-3 in Mosaic GPU (Hopper, dense): how far a wgmma/TMA kernel gets
                from jax.experimental.pallas.ops.gpu import attention_mgpu as fa3
                # its fastest tiles on the H200 (570 TFLOP/s at 1 x 8k in fp16; docs/kernels.md)
                cfg = fa3.TuningConfig(block_q=64, block_kv=128, max_concurrent_steps=2, causal=True)
                fn = jax.jit(lambda a, b, cc, cfg=cfg: fa3.attention(a, b, cc, cfg))
                # float16 inputs: jax 0.11.2's kernel allocates its shared-memory tiles in float16 whatever the
                # input dtype (bf16 fails "Expected dtypes to match"); same FLOPs, same MMA rate on Hopper
                f16 = [a.astype(jnp.float16) for a in (q, k, v)]
                tm, _ = timeit(fn, [tuple(f16)], reps=5)
                row["mgpu_fa3_us"] = tm * 1e6
                row["mgpu_fa3_TFLOPs"] = flops / tm / 1e12
            except Exception as e:  # noqa: BLE001 - not on this GPU / jax: recorded, the rest goes on
                row["mgpu_fa3_error"] = repr(e)[:300]
        print("prefill", row, flush=True)
        results["prefill"].append(row)


def bench_mixed(rng, n_dec, dec_ctx, chunk, interpret, results):
    ours = jax.jit(lambda q, kv, a, b, c: ragged_paged_attention_pallas(q, kv, a, b, c, sm_scale=D ** -0.5,
                                                                        interpret=interpret))
    dec = paged_batch(rng, [1] * n_dec, [dec_ctx] * n_dec)
    pre = paged_batch(rng, [chunk], [chunk])
    mix = paged_batch(rng, [1] * n_dec + [chunk], [dec_ctx] * n_dec + [chunk])
    td, _ = timeit(ours, dec)
    tp, _ = timeit(ours, pre)
    tm, _ = timeit(ours, mix)
    row = {"decodes": n_dec, "decode_ctx": dec_ctx, "prefill_chunk": chunk, "decode_us": td * 1e6,
           "prefill_us": tp * 1e6, "mixed_us": tm * 1e6, "mixed_over_sum": tm / (td + tp)}
    print("mixed", row, flush=True)
    results["mixed"] = row


def time_cache_writes(fn, cache, k, slots, reps: int = 5, inner: int = 10):
    """Median seconds of one ``cache = fn(cache, k, k, slots)`` (the cache donated, so chained), after a
    warm-up call; returns (seconds, the last cache)."""
    cache = jax.block_until_ready(fn(cache, k, k, slots))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            cache = fn(cache, k, k, slots)
        jax.block_until_ready(cache)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times), cache


def bench_write(quick, results):
    nb = 1024 if quick else 65536
    cache = jnp.zeros((2, nb, BS, HK, D), DT)
    fn = jax.jit(write_kv_cache, donate_argnums=0)
    rows = []
    for t in (256, 8192):
        k = jax.random.normal(jax.random.key(t), (t, HK, D), jnp.float32).astype(DT)
        slots = jnp.asarray(np.random.default_rng(t).permutation(nb * BS)[:t].astype(np.int32))
        tm, cache = time_cache_writes(fn, cache, k, slots)
        cache_bytes = cache.size * cache.dtype.itemsize
        rows.append({"tokens": t, "us": tm * 1e6, "cache_GB": cache_bytes / 1e9,
                     "copy_of_cache_would_take_us_at_4TBps": 2 * cache_bytes / 4e12 * 1e6,
                     "written_GBps": t * HK * D * 2 * 2 / tm / 1e9})
        print("write_kv_cache", rows[-1], flush=True)
    results["write_kv_cache"] = rows


FP8_DTYPES = {"bf16": DT, "fp8_e4m3": jnp.float8_e4m3fn, "fp8_e5m2": jnp.float8_e5m2}


def bench_fp8_kv(rng, quick, interpret, results):
    """Decode (effective TB/s counting the bytes actually stored: 1 per fp8 element), prefill TFLOP/s and
    write_kv_cache over bf16 / fp8 caches of the same shapes; scales 1.0 (the engine's default). e4m3 decode rows:
    the default fp8 tile (decode_config with kv_itemsize 1: 128 keys, float16 tiles), the bf16 cache's tile with
    the tiles converted to q's dtype (the fp8 default before), and 128-key float16 tiles at 1, 2 and 4 splits.
    Prefill: q-dtype and float16 tiles (``fp8_f16``, one hardware convert per two values; pallas_triton.py)."""
    rows = []
    decode = [(4, 64)] if quick else [(128, 2048), (32, 8192), (256, 2048)]
    for bsz, ctx in decode:
        base = paged_batch(rng, [1] * bsz, [ctx] * bsz, copies=2 if quick else 3)
        ref_us = None
        for name, dt in FP8_DTYPES.items():
            if name == "fp8_e5m2" and (bsz, ctx) != decode[0]:
                continue
            sets = [(q, kv.astype(dt), a, b, c) for q, kv, a, b, c in base]
            itemsize = jnp.dtype(dt).itemsize
            default = decode_config(bsz, HK, HQ // HK, D, ctx, kv_itemsize=itemsize)
            variants = [None]
            if name == "fp8_e4m3":
                variants.append(decode_config(bsz, HK, HQ // HK, D, ctx))  # the bf16 tile, q-dtype tiles
                if not quick:
                    variants += [c for c in (TileConfig(block_q=4, block_n=128, num_splits=s, num_warps=4,
                                                        num_stages=3, fp8_f16=True) for s in (1, 2, 4))
                                 if c != default]
            for cfg in variants:
                fn = jax.jit(lambda q, kv, a, b, c, cfg=cfg: ragged_paged_attention_pallas(
                    q, kv, a, b, c, sm_scale=D ** -0.5, interpret=interpret, decode_cfg=cfg))
                nbytes = kv_bytes([ctx] * bsz, jnp.dtype(dt).itemsize)
                row = {"kind": "decode", "kv": name, "B": bsz, "ctx": ctx, "kv_MB": nbytes / 1e6,
                       "config": str(cfg or default)}
                try:
                    t, c = timeit(fn, sets)
                    row.update(us=t * 1e6, TBps=nbytes / t / 1e12, compile_s=c)
                    if name == "bf16":
                        ref_us = t * 1e6
                    elif ref_us:
                        row["speedup_vs_bf16"] = ref_us / (t * 1e6)
                except Exception as e:  # noqa: BLE001 - record why a variant could not run
                    row["error"] = repr(e)[:300]
                print("fp8_kv", row, flush=True)
                rows.append(row)
            del sets
        del base
    lens = [64] if quick else [8192]
    base = paged_batch(rng, lens, lens)
    ref_us = None
    for name, f16 in (("bf16", False), ("fp8_e4m3", False), ("fp8_e4m3", True)):
        sets = [(q, kv.astype(FP8_DTYPES[name]), a, b, c) for q, kv, a, b, c in base]
        cfg = dataclasses.replace(prefill_config(HQ // HK, D), fp8_f16=f16)
        fn = jax.jit(lambda q, kv, a, b, c, cfg=cfg: ragged_paged_attention_pallas(
            q, kv, a, b, c, sm_scale=D ** -0.5, interpret=interpret, prefill_cfg=cfg))
        t, c = timeit(fn, sets, reps=5)
        row = {"kind": "prefill", "kv": name, "seqs": 1, "len": lens[0], "config": str(cfg), "us": t * 1e6,
               "TFLOPs": causal_flops(lens) / t / 1e12, "compile_s": c}
        if ref_us:
            row["speedup_vs_bf16"] = ref_us / (t * 1e6)
        ref_us = ref_us or t * 1e6
        print("fp8_kv", row, flush=True)
        rows.append(row)
    del base, sets
    nb, tokens = (1024, 256) if quick else (65536, 8192)
    fn = jax.jit(write_kv_cache, donate_argnums=0)
    k = jax.random.normal(jax.random.key(7), (tokens, HK, D), jnp.float32).astype(DT)
    slots = jnp.asarray(np.random.default_rng(7).permutation(nb * BS)[:tokens].astype(np.int32))
    ref_us = None
    for name in ("bf16", "fp8_e4m3"):
        cache = jnp.zeros((2, nb, BS, HK, D), FP8_DTYPES[name])
        tm, cache = time_cache_writes(fn, cache, k, slots)
        row = {"kind": "write_kv_cache", "kv": name, "tokens": tokens, "us": tm * 1e6,
               "cache_GB": cache.size * cache.dtype.itemsize / 1e9}
        if ref_us:
            row["speedup_vs_bf16"] = ref_us / row["us"]
        ref_us = ref_us or row["us"]
        print("fp8_kv", row, flush=True)
        rows.append(row)
        del cache
    results["fp8_kv"] = rows


def sweep(rng, interpret, results):
    """Tile-shape variants at the headline shapes; the defaults in pallas_attention.py come from here."""
    out = []
    for bsz, ctx in ((128, 2048), (32, 8192)):
        sets = paged_batch(rng, [1] * bsz, [ctx] * bsz)
        nbytes = kv_bytes([ctx] * bsz)
        variants = ((64, 4, 3, 1), (64, 4, 3, 2), (128, 4, 3, 2), (64, 8, 3, 1))
        if ctx > 4096:
            variants = ((64, 4, 3, 2), (64, 4, 3, 4), (128, 4, 2, 4))
        for bn, w, st, sp in variants:
            cfg = TileConfig(block_q=4, block_n=bn, num_splits=sp, num_warps=w, num_stages=st)
            fn = jax.jit(lambda q, kv, a, b, c, cfg=cfg: ragged_paged_attention_pallas(
                q, kv, a, b, c, sm_scale=D ** -0.5, interpret=interpret, decode_cfg=cfg))
            try:
                t, _ = timeit(fn, sets)
                out.append({"kind": "decode", "B": bsz, "ctx": ctx, "cfg": str(cfg), "us": t * 1e6,
                            "TBps": nbytes / t / 1e12})
            except Exception as e:  # noqa: BLE001
                out.append({"kind": "decode", "B": bsz, "ctx": ctx, "cfg": str(cfg), "error": repr(e)[:200]})
            print("sweep", out[-1], flush=True)
    lens = [8192]
    sets = paged_batch(rng, lens, lens)
    # bq32/bn64/4 warps/3 stages leads the 11 variants of the full sweep (308 TFLOP/s at 1 x 8k on the H200);
    # these are its neighbours
    for bq, bn, w, st in ((32, 64, 4, 3), (32, 64, 4, 2), (32, 64, 8, 3), (32, 64, 8, 2), (64, 64, 8, 3),
                          (32, 128, 8, 2), (64, 32, 8, 3)):
        cfg = TileConfig(block_q=bq, block_n=bn, num_warps=w, num_stages=st)
        fn = jax.jit(lambda q, kv, a, b, c, cfg=cfg: ragged_paged_attention_pallas(
            q, kv, a, b, c, sm_scale=D ** -0.5, interpret=interpret, prefill_cfg=cfg))
        try:
            t, _ = timeit(fn, sets, reps=5)
            out.append({"kind": "prefill", "len": 8192, "cfg": str(cfg), "us": t * 1e6,
                        "TFLOPs": causal_flops(lens) / t / 1e12})
        except Exception as e:  # noqa: BLE001
            out.append({"kind": "prefill", "len": 8192, "cfg": str(cfg), "error": repr(e)[:200]})
        print("sweep", out[-1], flush=True)
    results["sweep"] = out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke test)")
    ap.add_argument("--interpret", action="store_true", help="Pallas interpret mode (CPU)")
    ap.add_argument("--sweep", action="store_true", help="also time tile-shape variants")
    ap.add_argument("--fp8-kv", action="store_true", help="also time the fp8 KV cache (decode, prefill, write)")
    ap.add_argument("--fp8-kv-only", action="store_true", help="ceilings and the fp8 KV cache section only")
    ap.add_argument("--out-dir", default="benchmarks/kernels")
    ap.add_argument("--tag", help="file name tag (default: h200, or h200_fp8kv with --fp8-kv-only so that the "
                                   "main table is not overwritten)")
    args = ap.parse_args()
    args.tag = args.tag or ("h200_fp8kv" if args.fp8_kv_only else "h200")
    rng = np.random.default_rng(0)
    dev = jax.devices()[0]
    results = {"device": getattr(dev, "device_kind", dev.platform), "jax": jax.__version__,
               "decode": [], "prefill": []}
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, f"attention_{args.tag}")

    def save():  # after every section, so a run cut short still leaves its numbers
        with open(base + ".json", "w") as f:
            json.dump(results, f, indent=1)
        write_markdown(results, base + ".md")

    results["ceilings"] = ceilings(args.quick)
    print("ceilings", results["ceilings"], flush=True)
    if args.fp8_kv_only:
        steps = []
    elif args.quick:
        steps = [lambda: bench_decode(rng, [4], [64], True, args.interpret, results),
                 lambda: bench_prefill(rng, [(1, 64), (2, 32)], args.interpret, results),
                 lambda: bench_mixed(rng, 4, 64, 40, args.interpret, results)]
    else:
        steps = [lambda: bench_decode(rng, [32, 128, 256], [512, 2048, 8192], False, args.interpret, results),
                 lambda: bench_prefill(rng, [(1, 8192), (8, 1024)], args.interpret, results),
                 lambda: bench_mixed(rng, 200, 2048, 2048, args.interpret, results)]
    if not args.fp8_kv_only:
        steps.append(lambda: bench_write(args.quick, results))
    if args.fp8_kv or args.fp8_kv_only:
        steps.append(lambda: bench_fp8_kv(rng, args.quick, args.interpret, results))
    if args.sweep:
        steps.append(lambda: sweep(rng, args.interpret, results))
    for step in steps:
        step()
        save()
    with open(base + ".md") as f:
        print(f.read())


if __name__ == "__main__":
    main()
