"""Microbenchmark of the weight-only linear layers on one GPU: the fused int4 kernel (ops/quant_matmul) vs a
bf16 matmul vs int8 / fp8 weight-only (the ``jaxllm.models.quant.linear`` math: convert in the GEMM, scale the
output) vs fp8 W8A8 (``fp8_activations="dynamic"``: per-token e4m3 activations, fp8 x fp8 dot with float32
accumulation, cuBLASLt fp8 on Hopper if XLA picks it) vs the int4 reference (dequantize, then the GEMM: the
dispatcher's choice at M >= 256).

Shapes: Llama-3.1-8B's fused gate_up (K=4096, N=2*14336) and down (K=14336, N=4096), M in {1, 16, 128, 256},
bf16 activations, group 128; with ``--shapes``, also q_proj / o_proj (K=N=4096) and a fused qkv (K=4096, N=6144).
``bf16_splitk2`` / ``bf16_splitk4``: the bf16 product as a batched GEMM over 2 / 4 slices of K plus a float32 sum,
for GEMMs with too few output tiles to fill the GPU (q_proj / o_proj at 256 rows: 64 tiles of 128 x 128 on 132 SMs,
~290 TFLOP/s in the decode-heavy B2 trace). Timing: one jitted program runs R x C calls (C weight copies, so the weights in
use never fit in L2; R distinct x, ``--calls-per-copy``), all outputs returned; median of 5 runs / calls. R is 1 by
default: with R > 1, XLA computes a weight's dequantization or convert once for its R calls (common
subexpression), which flatters every method that does not fuse it into the GEMM.
Effective weight GB/s = bytes of the weight in its format (int4: packed + fp16 scales + int8 zeros) / time.

    python scripts/bench_quant_matmul.py --output $OUT/quant_matmul.json      (bash scripts/device.sh quant)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jaxllm.models.quant import quantize_activations_fp8
from ops.quant_matmul import Int4Tiles, int4_matmul_pallas, int4_matmul_reference, plan, to_nk_layout
from ops.quant_matmul.mosaic_gpu import SMEM_BUDGET, int4_matmul_mosaic, int4_matmul_mosaic_group, mosaic_plan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_timing import timeit

SHAPES = {"gate_up": (4096, 2 * 14336), "down": (14336, 4096), "q_o": (4096, 4096), "qkv": (4096, 6144),
          "k_v": (4096, 1024)}
DEFAULT_SHAPES = ("gate_up", "down")
GROUP = 128
L2_BYTES = 3 * 64 << 20  # keep the weights of one program well above the L2 (50-60 MB on Hopper)


def weight_bytes(kind, k, n):
    fp8, int4 = k * n + 4 * n, k * n // 2 + 3 * (k // GROUP) * n
    return {"bf16": 2 * k * n, "bf16_splitk2": 2 * k * n, "bf16_splitk4": 2 * k * n, "bf16_qkv3": 2 * k * n,
            "int8": fp8, "int8_mgpu_t": fp8, "fp8": fp8, "fp8_w8a8": fp8, "fp8_w8a8_nk": fp8, "fp8_w8a8_nk_bf16": fp8,
            "int4": int4, "int4_reference": int4, "int4_mosaic": int4, "int4_mosaic_qkv3": int4,
            "int4_mosaic_group": int4}[kind]


def make_weights(kind, k, n, copies, key):
    out = []
    for c in range(copies):
        kc = jax.random.fold_in(key, c)
        if kind == "bf16":
            out.append((0.02 * jax.random.normal(kc, (k, n), jnp.float32)).astype(jnp.bfloat16))
        elif kind == "int8":
            out.append((jax.random.randint(kc, (k, n), -127, 128, jnp.int8), jnp.full((n,), 1e-3, jnp.float32)))
        elif kind == "fp8":
            w = (100 * jax.random.normal(kc, (k, n), jnp.float32)).astype(jnp.float8_e4m3fn)
            out.append((w, jnp.full((n,), 1e-4, jnp.float32)))
        else:
            qw = jax.lax.bitcast_convert_type(jax.random.bits(kc, (k // 8, n), jnp.uint32), jnp.int32)
            out.append((qw, jnp.full((k // GROUP, n), 1e-3, jnp.float16), jnp.full((k // GROUP, n), 8, jnp.int8)))
    return out


def op(kind, tiles=None):
    if kind == "bf16":
        return lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype)
    if kind.startswith("bf16_splitk"):
        splits = int(kind.removeprefix("bf16_splitk"))

        def split_k(x, w):  # [S, M, K/S] x [S, K/S, N] -> [S, M, N] float32 partials -> their sum
            m, k = x.shape
            xs = x.reshape(m, splits, k // splits).transpose(1, 0, 2)
            parts = jnp.einsum("smk,skn->smn", xs, w.reshape(splits, k // splits, -1),
                               preferred_element_type=jnp.float32)
            return parts.sum(axis=0).astype(x.dtype)
        return split_k
    if kind in ("int8", "fp8"):
        return lambda x, w: (jnp.dot(x, w[0].astype(x.dtype), preferred_element_type=jnp.float32)
                             * w[1]).astype(x.dtype)
    if kind == "fp8_w8a8":
        def w8a8(x, w):
            xq, xs = quantize_activations_fp8(x, 1)
            return (jnp.dot(xq, w[0], preferred_element_type=jnp.float32) * xs[:, None] * w[1]).astype(x.dtype)
        return w8a8
    if kind in ("fp8_w8a8_nk", "fp8_w8a8_nk_bf16"):  # weight stored [N, K]: K minor for both fp8 operands
        out_type = jnp.bfloat16 if kind.endswith("bf16") else jnp.float32

        def w8a8_nk(x, w):
            xq, xs = quantize_activations_fp8(x, 1)
            out = jax.lax.dot_general(xq, w[0], (((1,), (1,)), ((), ())), preferred_element_type=out_type)
            return (out.astype(jnp.float32) * xs[:, None] * w[1]).astype(x.dtype)
        return w8a8_nk
    if kind == "int8_mgpu_t":  # JAX's Hopper mixed-type Mosaic GPU kernel (warp-specialized TMA pipeline, the
        # int8 operand dequantized in registers for an RS wgmma): y^T = W^T [N, K] int8 @ x^T, the weight as the
        # register operand as Machete-style int4 kernels do. A ceiling for such a kernel at decode rows.
        from jax.experimental.pallas.ops.gpu import hopper_mixed_type_matmul_mgpu as mixed

        def mgpu_t(x, w):
            m = x.shape[0]
            cfg = mixed.TuningConfig(tile_m=128, tile_n=min(m, 64), tile_k=128, max_concurrent_steps=4,
                                     epi_tile_n=min(m, 64), epi_tile_m=64, wg_dimension=mixed.MatmulDimension.M)
            yt = mixed.mixed_matmul_kernel(w[0], x.T, out_dtype=x.dtype, config=cfg)  # [N, M]
            return (yt.astype(jnp.float32) * w[1][:, None]).T.astype(x.dtype)
        return mgpu_t
    if kind == "int4_reference":
        return lambda x, w: int4_matmul_reference(x, *w)
    if kind == "int4_mosaic":
        return lambda x, w: int4_matmul_mosaic(x, *w, tiles=tiles)
    # the "qkv" shape as the model runs it: q / k / v (N = 4096 / 1024 / 1024) as three products, or one grouped
    # Mosaic launch (ops/quant_matmul/mosaic_gpu.int4_matmul_mosaic_group)
    if kind == "bf16_qkv3":
        return lambda x, ws: tuple(jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype) for w in ws)
    if kind == "int4_mosaic_qkv3":
        return lambda x, ws: tuple(int4_matmul_mosaic(x, *w, tiles=mosaic_plan(x.shape[0], x.shape[1], w[0].shape[0],
                                                                             GROUP, 132)) for w in ws)
    if kind == "int4_mosaic_group":
        return lambda x, ws: tuple(int4_matmul_mosaic_group(x, list(ws), tiles=tiles))
    return lambda x, w: int4_matmul_pallas(x, *w, tiles=tiles)


def gemm_kinds(compiled_text: str) -> list[str]:
    """The GEMM implementations XLA chose, read from the optimized HLO: custom-call targets (cuBLAS / cuBLASLt,
    e.g. "__cublas$lt$matmul$f8" for fp8 tensor-core GEMMs) and Triton GEMM fusions, so a row says whether the
    convert was fused into the matmul or the fp8 dot really ran in fp8."""
    kinds = set(re.findall(r'custom_call_target="([^"]+)"', compiled_text))
    kinds |= {f"triton:{k}" for k in re.findall(r'"kind":"(__triton[a-z_]*)"', compiled_text)}
    return sorted(k for k in kinds if "cublas" in k or "triton" in k or "gemm" in k.lower() or "mosaic" in k)


def time_op(fn, xs, ws) -> tuple[float, list[str]]:
    """(seconds per call, GEMM kinds in the compiled program)."""
    many = jax.jit(lambda xs, ws: tuple(fn(x, w) for x in xs for w in ws))
    kinds = gemm_kinds(many.lower(xs, ws).compile().as_text())
    return timeit(many, [(xs, ws)])[0] / (len(xs) * len(ws)), kinds


def tile_variants(m, k, n):
    """The plan's tiles and alternatives (pallas_triton.py): split_dot tiles (packed tile loaded once, x columns
    permuted so each of the 8 dots reads contiguous x) at 2-4 pipeline stages and BK 128 / 256, the gather
    variant for comparison. Kept short so the whole script stays within a few minutes."""
    base = plan(m, k, n, GROUP)
    s = base.num_splits
    T = Int4Tiles
    if m <= 16:
        alts = [T(16, 64, 128, s, 4, 3, True), T(16, 64, 128, s, 4, 4, True), T(16, 128, 128, s, 4, 3, True),
                T(16, 64, 256, max(1, s // 2), 4, 3, True), T(16, 64, 128, s, 4, 3, True, True),
                T(16, 64, 256, max(1, s // 2), 4, 3, True, True), T(16, 64, 128, s, 4, 3)]
    elif m <= 64:  # the BN 128 plan (splits until 2 programs per SM) and neighbours of the plan
        old_s = 1
        while old_s < 16 and (n // 128) * old_s < 2 * 132:
            old_s *= 2
        alts = [T(64, 128, 128, old_s, 4, 3, True, True), T(64, 64, 128, s * 2, 4, 3, True, True),
                T(64, 64, 128, max(1, s // 2), 4, 3, True, True), T(64, 64, 256, max(1, s // 2), 4, 3, True, True),
                T(64, 64, 128, s, 4, 4, True, True)]
    else:
        alts = [T(64, 128, 128, s, 4, 3, True, True), T(128, 128, 128, 1, 8, 3, True, True),
                T(128, 256, 64, 1, 8, 3, True, True), T(128, 128, 64, 1, 8, 2)]
    ok = [t for t in alts if t.fits(k, n, GROUP) and t != base]
    return [("plan", base)] + [((f"bm{t.block_m}_bn{t.block_n}_bk{t.block_k}_s{t.num_splits}_w{t.num_warps}"
                                f"_st{t.num_stages}{'_split' if t.split_dot else ''}{'_joined' if t.joined else ''}"), t) for t in ok]


def mosaic_variants(m, k, n):
    """The Mosaic GPU kernel's plan (mosaic_gpu.py) and neighbours: pipeline depth, K splits, token tile."""
    base = mosaic_plan(m, k, n, GROUP, 132)
    if base is None:
        return []
    r = dataclasses.replace
    alts = [r(base, stages=3), r(base, stages=6), r(base, tk=64), r(base, tk=128)]
    for stages in (4, 3, 2):  # two groups per K step: half the pipeline steps (each step's fixed cost)
        wide = r(base, tk=256, stages=stages)
        if wide.smem_bytes() <= SMEM_BUDGET:
            alts += [wide, r(wide, interleave=True)]  # and each group's wgmma issued as soon as it is dequantized
            break
    alts += [r(base, splits=s) for s in (1, 2, 4, 8, 16) if s != base.splits]
    if m >= 256 and base.tm < 256:
        alts.append(r(base, tm=256, stages=2))
    ok = []
    for t in alts:
        steps = k // (t.tk * t.splits) if k % (t.tk * t.splits) == 0 else 0
        if (steps >= 2 and (k // t.splits) % GROUP == 0 and m % t.tm == 0 and t not in ok and t != base
                and t.smem_bytes() <= SMEM_BUDGET):
            ok.append(t)
    # the plan again last: a first-timed variant that reads slow (q_o has timed 34 us at the plan first and 14-17 us
    # for its neighbours) shows up as a gap between the two
    return [("plan", base)] + [(t.name, t) for t in ok] + [("plan_again", base)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--output")
    ap.add_argument("--m", type=int, nargs="*", default=[1, 16, 256, 2048],
                    help="rows of x: 1-256 are decode batches, 2048 a prefill chunk (compute-bound: fp8 GEMMs)")
    ap.add_argument("--kinds", nargs="*", help="only these implementations (bf16 bf16_splitk2 bf16_splitk4 int8 int8_mgpu_t fp8 "
                                                "fp8_w8a8 fp8_w8a8_nk int4_reference int4_pallas int4_mosaic); default all")
    ap.add_argument("--shapes", nargs="*", choices=sorted(SHAPES), default=list(DEFAULT_SHAPES),
                    help="weight shapes (default: %(default)s)")
    ap.add_argument("--calls-per-copy", type=int, default=1,
                    help="distinct x per weight copy (> 1 lets XLA share one dequantization between calls)")
    ap.add_argument("--pallas-plan-only", action="store_true", help="time our Triton int4 kernel at its plan only")
    ap.add_argument("--variants", help="regular expression: only the Mosaic variants whose label matches (the plan "
                                       "and plan_again always run)")
    ap.add_argument("--markdown", nargs="+", metavar="JSON", help="only print a Markdown report of these results")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return
    key = jax.random.key(0)
    results = []
    print(f"device: {jax.devices()[0].device_kind}", flush=True)
    print(f"{'shape':8} {'M':>4} {'impl':34} {'us':>9} {'GB/s':>8} {'x bf16':>7}  gemm", flush=True)
    for name in args.shapes:
        k, n = SHAPES[name]
        weights = {}
        for kind in ("bf16", "int8", "fp8", "int4"):
            copies = min(8, max(1, -(-L2_BYTES // weight_bytes(kind, k, n))))
            weights[kind] = make_weights(kind, k, n, copies, jax.random.fold_in(key, hash(kind) % 1000))
        weights["int4_reference"], weights["fp8_w8a8"] = weights["int4"], weights["fp8"]
        weights["bf16_splitk2"] = weights["bf16_splitk4"] = weights["bf16"]
        weights["fp8_w8a8_nk"] = weights["fp8_w8a8_nk_bf16"] = [(jnp.asarray(w.T), s) for w, s in weights["fp8"]]
        weights["int8_mgpu_t"] = [(jnp.asarray(w.T), s) for w, s in weights["int8"]]
        if not args.kinds or any(kind.startswith("int4_mosaic") for kind in args.kinds):
            weights["int4_mosaic"] = [(jax.jit(to_nk_layout)(q), s, z) for q, s, z in weights["int4"]]
        if name == "qkv":
            cuts = ((0, 4096), (4096, 5120), (5120, 6144))
            weights["bf16_qkv3"] = [tuple(w[:, a:b] for a, b in cuts) for w in weights["bf16"]]
            weights["int4_mosaic_qkv3"] = weights["int4_mosaic_group"] = [
                tuple((wt[a:b], s[:, a:b], z[:, a:b]) for a, b in cuts) for wt, s, z in weights["int4_mosaic"]]
        for m in args.m:
            xs = [jax.random.normal(jax.random.fold_in(key, 100 + r), (m, k), jnp.float32).astype(jnp.bfloat16)
                  for r in range(args.calls_per_copy)]
            cases = [(kind, kind, None) for kind in ("bf16", "bf16_splitk2", "bf16_splitk4", "int8", "int8_mgpu_t",
                                                     "fp8", "fp8_w8a8", "fp8_w8a8_nk", "fp8_w8a8_nk_bf16",
                                                     "int4_reference")]
            if m <= 256:  # the dispatcher runs the reference (dequantize + GEMM) above 256 rows
                cases += [(f"int4_pallas[{label}]", "int4", t) for label, t in tile_variants(m, k, n)
                          if label == "plan" or not args.pallas_plan_only]
                variants = [(label, t) for label, t in mosaic_variants(m, k, n)
                            if label.startswith("plan") or not args.variants or re.search(args.variants, label)]
                cases += [(f"int4_mosaic[{label}]", "int4_mosaic", t) for label, t in variants]
                if name == "qkv":
                    cases += [("bf16_qkv3", "bf16_qkv3", None), ("int4_mosaic_qkv3", "int4_mosaic_qkv3", None)]
                    cases += [(f"int4_mosaic_group[{label}]", "int4_mosaic_group", t) for label, t in variants]
            elif large := mosaic_plan(m, k, n, GROUP, 132):  # above the dispatch's 256 rows: does it beat the reference?
                cases.append(("int4_mosaic[plan]", "int4_mosaic", large))
            if args.kinds:
                cases = [c for c in cases if c[0].split("[")[0] in args.kinds or c[1] == "bf16"]
            bf16_us = None
            for label, kind, tiles in cases:
                try:
                    sec, gemms = time_op(op(kind, tiles), xs, weights[kind])
                except Exception as e:  # noqa: BLE001 - report a failing variant, keep measuring the rest
                    print(f"{name:8} {m:4} {label:34} FAILED: {type(e).__name__}: {str(e)[:200]}", flush=True)
                    results.append({"shape": name, "K": k, "N": n, "M": m, "impl": label, "error": str(e)[:500]})
                    continue
                us = sec * 1e6
                bf16_us = us if kind == "bf16" else bf16_us
                gbs = weight_bytes(kind, k, n) / sec / 1e9
                print(f"{name:8} {m:4} {label:34} {us:9.1f} {gbs:8.0f} {bf16_us / us:7.2f}  {','.join(gemms)}",
                      flush=True)
                results.append({"shape": name, "K": k, "N": n, "M": m, "impl": label, "us": us,
                                "weight_GBps": gbs, "speedup_vs_bf16": bf16_us / us, "gemm": gemms,
                                "tflops": 2 * m * k * n / sec / 1e12,
                                "tiles": None if tiles is None else tiles.__dict__})
            save(args.output, results)  # after every M: a run cut short by a timeout keeps what it measured
        del weights


def markdown(paths: list[str]) -> str:
    """One table per result file: microseconds and speed-up vs bf16 per (shape, M, implementation)."""
    out = ["# Quantized linear layers on the H200 (scripts/bench_quant_matmul.py)", "",
           ("Llama-3.1-8B gate_up (K=4096, N=28672) and down (K=14336, N=4096), bf16 activations, int4 group 128. "
           "`gemm`: the GEMM XLA chose, read from the optimized HLO (`__cublas$lt$matmul$f8` = fp8 tensor cores, "
           "`__triton_nested_gemm_fusion` = XLA's Triton GEMM with the convert/dequantize fused in, "
           "`__gpu$xla.gpu.triton` = our Pallas kernel). Weight-only fp8/int8 scale the output; W8A8 quantizes "
           "activations per token. `_nk`: the fp8 weight stored [N, K] (K minor), the layout the model now uses "
           "for W8A8."), ""]
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        out += [f"## {os.path.basename(path)}" + (f" (XLA_FLAGS={data['xla_flags']})" if data.get("xla_flags") else ""),
                "", "| shape | M | impl | us | x bf16 | gemm |", "|---|---|---|---|---|---|"]
        for r in data["results"]:
            if "error" in r:
                out.append(f"| {r['shape']} | {r['M']} | {r['impl']} | failed | | {r['error'][:80]} |")
            else:
                out.append(f"| {r['shape']} | {r['M']} | {r['impl']} | {r['us']:.1f} | {r['speedup_vs_bf16']:.2f} | "
                           f"{', '.join(r.get('gemm', []))} |")
        out.append("")
    return "\n".join(out)


def save(path, results):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "group_size": GROUP,
                   "xla_flags": os.environ.get("XLA_FLAGS", ""), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
