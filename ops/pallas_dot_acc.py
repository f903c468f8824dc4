"""``acc + a @ b`` as one Triton dot with ``acc`` as its accumulator, for the Pallas Triton kernels.

Why: Pallas lowers ``acc + pl.dot(a, b)`` to ``tt.dot(a, b, zeros)`` then an ``arith.addf``, and Triton does not
fold a float add into the dot (checked with triton 3.6: the TTGIR keeps the addf). The kernel then holds two
float32 tiles, the running accumulator and the dot's fresh result: at 128 x 128 that is 128 more registers per
thread of a 4-warp program. The prefill attention tile spilled ~900 bytes per thread per key step because of
it (scripts/kernel_resources.py, SASS STL/LDL counts).

``dot_acc`` binds a primitive whose Triton lowering rule emits ``tt.dot(a, b, acc)`` (registered in Pallas'
Triton rule table, a private jax API: when it is missing the primitive is not used and ``dot_acc`` falls back to
``acc + dot``). Off the GPU (Pallas interpret mode) the primitive evaluates as ``acc + dot`` in float32.
``DOT_ACC_FUSED`` says which path the running jax takes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas import triton as plgpu

try:  # jax internals: the primitive API and Pallas' Triton lowering table
    from jax._src import core as _core
    from jax._src.interpreters import mlir as _mlir
    from jax._src.pallas.triton import lowering as _tl
    _RULES = _tl.triton_lowering_rules
    _tt = _tl.tt_dialect
except (ImportError, AttributeError):  # pragma: no cover - a jax without them: the unfused fallback
    _RULES = None


def _reference(a, b, acc):
    return acc + jnp.dot(a, b, preferred_element_type=jnp.float32).astype(acc.dtype)


if _RULES is not None:
    dot_acc_p = _core.Primitive("jaxllm_dot_acc")
    dot_acc_p.def_impl(_reference)
    dot_acc_p.def_abstract_eval(lambda a, b, acc: _core.ShapedArray(acc.shape, acc.dtype))
    _mlir.register_lowering(dot_acc_p, _mlir.lower_fun(_reference, multiple_results=False))

    def _triton_rule(ctx, a, b, acc):
        # bf16 / f16 operands: the default input precision (no tf32 question arises).
        return _tt.dot(a, b, acc)

    _RULES[dot_acc_p] = _triton_rule
    DOT_ACC_FUSED = True
else:  # pragma: no cover
    DOT_ACC_FUSED = False


def dot_acc(a: jax.Array, b: jax.Array, acc: jax.Array) -> jax.Array:
    """acc [M, N] float32 + a [M, K] @ b [K, N], accumulated in acc when a and b are bfloat16 / float16 (one
    dtype). Other operands (float32 tests: Pallas picks their tf32 / IEEE precision) take ``acc + pl.dot``."""
    fused = DOT_ACC_FUSED and a.dtype == b.dtype and a.dtype in (jnp.bfloat16, jnp.float16)
    if not fused or acc.dtype != jnp.float32:
        return acc + plgpu.dot(a, b)
    return dot_acc_p.bind(a, b, acc)
