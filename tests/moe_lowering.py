"""One MoE layer (router, top-k, sorted rows, two grouped matmuls, combine) lowered for CUDA on the CPU: which
XLA ops it runs per layer, and XLA's CPU cost analysis of it.

Every XLA op outside the kernels is at least one GPU kernel launch that the host enqueues one by one, and every
op that touches the [M, *] rows (M = tokens x top-k) is a pass over HBM; a cumsum (``reduce_window``) lowers to
a multi-level scan of pads and adds. ``layer_ops`` counts the StableHLO ops of the layer lowered with the sm_90
kernel choices (``as_if_gpu``), ``layer_cost`` compiles it for the CPU (each kernel stood in by an opaque call) and
returns XLA's cost analysis. scripts/moe_layer_ops.py prints both for Qwen3-30B-A3B's dimensions.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
from cuda_lowering import CUDA, as_if_gpu

# Qwen3-30B-A3B: model dim, experts, expert ffn dim, experts per token
QWEN3_30B_A3B = {"d": 2048, "e": 128, "f": 768, "k": 8}


def layer_fn(top_k: int, impl: str | None = None):
    """(x [T, D], router [D, E], gate_up [E, D, 2, F], down [E, F, D]) -> [T, D]: one bf16 MoE layer."""
    from jaxllm.models.moe import expert_ffn, route

    def layer(x, router, gate_up, down):
        weights, experts = route(x, router, top_k, True)
        return expert_ffn(x, weights, experts, (gate_up, None), (down, None), 0, impl).astype(x.dtype)

    return layer


def layer_args(tokens: int, d: int, e: int, f: int, k: int, dtype=jnp.bfloat16):
    """ShapeDtypeStructs of ``layer_fn``'s operands for ``tokens`` tokens."""
    s = jax.ShapeDtypeStruct
    return s((tokens, d), dtype), s((d, e), dtype), s((e, d, 2, f), dtype), s((e, f, d), dtype)


def hlo_op_counts(lowered) -> collections.Counter:
    """{op name: count} of the StableHLO ops a lowered program runs, private functions (nested jits such as
    jnp.cumsum) counted once per call, and ``stablehlo.reduce_window[N]`` the reduce windows of length N; a Triton kernel is one ``stablehlo.custom_call`` (its body is opaque)."""
    module = lowered.compiler_ir("stablehlo")
    bodies, calls = {}, {}

    def walk(op, func):
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    name = inner.operation.name
                    if name == "func.call":
                        calls[func].append(str(inner.attributes["callee"]).lstrip("@"))
                    elif name.startswith(("stablehlo.", "chlo.")):
                        bodies[func][name] += 1
                        if name == "stablehlo.reduce_window":  # a cumsum: by its length
                            window = str(inner.attributes["window_dimensions"]).split(":")[-1].strip(" >")
                            bodies[func][f"{name}[{window}]"] += 1
                    walk(inner.operation, func)

    for func in module.body.operations:
        name = str(func.attributes["sym_name"]).strip('"')
        bodies[name], calls[name] = collections.Counter(), []
        walk(func.operation, name)

    def expand(func: str) -> collections.Counter:
        total = collections.Counter(bodies[func])
        for callee in calls[func]:
            total.update(expand(callee))
        return total

    return expand("main")


def layer_ops(tokens: int, d: int, e: int, f: int, k: int) -> tuple[collections.Counter, str]:
    """(op counts, module text) of one MoE layer lowered for CUDA with the sm_90 kernel choices."""
    with as_if_gpu():
        lowered = jax.jit(layer_fn(k)).trace(*layer_args(tokens, d, e, f, k)).lower(lowering_platforms=CUDA)
        return hlo_op_counts(lowered), lowered.as_text()


def _opaque_pallas_call(kernel, *, out_shape, **_):
    """Stands in for a grouped-matmul kernel in ``layer_cost``: an opaque call (a host callback, compiled, never
    run) of the kernel's operands and output shape, so its inputs and output are materialized as around the real
    kernel and nothing fuses across it; XLA counts no bytes for the call itself."""
    import numpy as np

    def run(*operands):
        return jax.pure_callback(lambda *_: np.zeros(out_shape.shape, out_shape.dtype), out_shape, *operands)

    return run


def layer_cost(tokens: int, d: int, e: int, f: int, k: int) -> dict:
    """XLA's cost analysis of the layer with the sm_90 choices (the Pallas path), compiled for the CPU with each
    kernel stood in by an opaque call (``_opaque_pallas_call``): the figures count the layer's own XLA ops, the
    traffic around the kernels (the kernels' own traffic, mostly the experts' weights, is not included)."""
    from jax.experimental import pallas

    original = pallas.pallas_call
    pallas.pallas_call = _opaque_pallas_call
    try:
        lowered = jax.jit(layer_fn(k, "pallas_triton")).trace(*layer_args(tokens, d, e, f, k)).lower()
    finally:
        pallas.pallas_call = original
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    cost = dict(cost[0] if isinstance(cost, list) else cost)
    cost["top-level ops"] = top_level_ops(compiled.as_text())
    return cost


def top_level_ops(hlo: str) -> int:
    """Instructions of a compiled module's entry computation that run (fusions, sorts, scatters, custom calls;
    not parameters, constants, bitcasts, tuples): on the CPU, a proxy for the kernels the GPU launches."""
    entry = hlo[hlo.index("ENTRY"):].split("\n}")[0].splitlines()[1:]
    free = (" parameter(", " constant(", " bitcast(", " get-tuple-element(", " tuple(")
    return sum(1 for line in entry if " = " in line and not any(op in line for op in free))
