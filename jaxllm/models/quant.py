"""Weight-only quantization of linear layers (``quantization="int8"`` / ``"fp8"``), applied at load time.

A linear weight ``w`` in our layout ``[*in_dims, *out_dims]`` (e.g. q_proj [D, H, Dh], o_proj [H, Dh, D],
gate_up [D, 2, F]) is stored as ``qweight`` (int8 or float8_e4m3fn, same shape and logical axes) and
``scale`` (float32, shape ``out_dims``, logical axes = the weight's output axes, so tensor parallelism shards
it like the output). Symmetric, per output channel: ``w ~= qweight * scale``, ``scale = max|w| / qmax`` with
the max over in_dims.

The matmul dequantizes on the fly: ``einsum(x, qweight.astype(x.dtype)) * scale``. Because the scale is per
output channel it factors out of the contraction and multiplies the (small) output, not the weight; XLA's
GPU GEMM fusion can then fold the int8/fp8 -> bf16 convert into the matmul's operand load, so the weight is
read from HBM at 1 byte per element.

fp8 checkpoints (``quant_from_checkpoint``) load straight into the same module: their float8_e4m3fn weight
becomes ``qweight`` and their per-tensor or per-channel ``weight_scale`` becomes ``scale`` (per-tensor scales
broadcast to every output channel). 4-bit AWQ/GPTQ weights are ``Int4Weight`` modules (quant_int4.py).

fp8 activations (W8A8; ``LLM(fp8_activations="auto"|"none"|"dynamic")``, fixed when the model is built; "auto", the
default, is "dynamic" on GPUs with fp8 tensor cores (sm_89+: L4, H100, H200) and weight-only elsewhere, as vLLM's
``quantization="fp8"`` runs fp8 GEMMs where the GPU has them and weight-only kernels where it does not): for fp8
weights the activation is also quantized to float8_e4m3fn, with one dynamic scale per token (max |x| over the
contracted dims / 448), and the matmul takes both fp8 operands with float32 accumulation and an x.dtype result,
which XLA runs on Hopper's fp8 tensor cores (cuBLASLt). ``out = dot(xq, qweight) * x_scale[token] * scale[channel]``,
the scales applied in float32 after the GEMM. cuBLASLt's
fp8 GEMM needs both operands with the contracted dim minor ("TN"), so after loading such a weight is stored
transposed, ``[*out_dims, *in_dims]`` (``k_minor``; jaxllm.weights.fp8_layout): in our usual [K, N] layout XLA
transposed the weight on every call and the fp8 GEMM ran at 0.37x bf16; K-minor it runs at 1.9-2.0x bf16 (Llama-8B
gate_up, M = 16 and 256; docs/quantization.md). It adds activation rounding (e4m3: 3 mantissa bits);
B2 on the H200 runs 1.33x bf16 with it and 0.83x weight-only (benchmarks/README.md).

Compiling W8A8 programs (``forward_compiler_options``): XLA's default GEMM autotuning (level 4) checks every
candidate fp8 GEMM's result against a reference, which takes 2-25 s per fp8 GEMM shape on the H200; with a
program per bucket the B2 start-up does not finish in 270 s. Level 2 still times every candidate but skips the
checks: about 1 s per shape, the same GEMMs, and B2 starts in 22-50 s (docs/quantization.md). Level 0 (no autotuning) is no answer: its default Triton tilings ran 4.6-66x slower
than the autotuned GEMMs (bf16 and fp8 alike). So the engine compiles programs with fp8 activations at level 2, unless XLA_FLAGS sets a level.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm import envs
from jaxllm.models.quant_int4 import Int4Weight, groupable, int4_linear, int4_linear_group
from jaxllm.ops.device_info import gpu_compute_capability
from jaxllm.quantization_config import INT4_METHODS, LOAD_TIME_METHODS

# Largest representable magnitude used by each method (int8 is symmetric: -127..127, -128 is never used).
QMAX = {"int8": 127.0, "fp8": 448.0}
QDTYPE = {"int8": jnp.int8, "fp8": jnp.float8_e4m3fn}


FP8_ACTIVATION_MODES = ("auto", "none", "dynamic")
FP8_TENSOR_CORES = (8, 9)  # the first compute capability with fp8 MMA (Ada; Hopper is 9.0)


def resolve_fp8_activations(mode: str) -> str:
    """"none" (weight-only) or "dynamic" (per-token fp8 activations) for the ``fp8_activations`` keyword;
    "auto" is "dynamic" when the first device is a GPU with fp8 tensor cores, else "none"."""
    if mode not in FP8_ACTIVATION_MODES:
        raise ValueError(f"fp8_activations={mode!r} is not supported; choose one of {FP8_ACTIVATION_MODES}")
    if mode == "auto":
        cc = gpu_compute_capability()
        mode = "dynamic" if cc is not None and cc >= FP8_TENSOR_CORES else "none"
    return mode


W8A8_AUTOTUNE_LEVEL = 2


def uses_fp8_activations(model) -> bool:
    """Whether any linear layer of ``model`` quantizes its activations to fp8 (W8A8)."""
    return any(isinstance(m, QuantizedWeight) and m.activations == "dynamic" for _, m in nnx.iter_graph(model))


def forward_compiler_options(model, xla_flags: str | None = None) -> dict | None:
    """XLA compile options for the model's step programs: autotuning without the correctness checks for W8A8
    models (see the module docstring), None otherwise or when ``xla_flags`` (default: $XLA_FLAGS) already
    names an autotune level (the user's choice wins)."""
    xla_flags = envs.xla_flags() if xla_flags is None else xla_flags
    if "xla_gpu_autotune_level" in xla_flags or not uses_fp8_activations(model):
        return None
    return {"xla_gpu_autotune_level": W8A8_AUTOTUNE_LEVEL}


def quantize_activations_fp8(x: jax.Array, in_ndim: int) -> tuple[jax.Array, jax.Array]:
    """x [..., *in_dims] -> (float8_e4m3fn x [..., *in_dims], float32 scale [...]): one scale per token, the max
    over the ``in_ndim`` contracted dims mapped to 448. An all-zero token gets scale 1."""
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - in_ndim, x.ndim))
    amax = jnp.max(jnp.abs(x32), axis=axes, keepdims=True)
    scale = jnp.where(amax > 0, amax / QMAX["fp8"], 1.0)
    xq = jnp.clip(x32 / scale, -QMAX["fp8"], QMAX["fp8"]).astype(jnp.float8_e4m3fn)
    return xq, scale.reshape(scale.shape[:x.ndim - in_ndim])


def quantize(w: jax.Array, method: str, in_ndim: int) -> tuple[jax.Array, jax.Array]:
    """w [*in_dims, *out_dims] (any float dtype) -> (qweight of the same shape, float32 scale [*out_dims]).

    ``in_ndim`` leading axes are contracted by the matmul; each output channel gets its own scale. An all-zero
    channel gets scale 1 (its qweight is 0), so dequantization never divides by zero."""
    if method not in LOAD_TIME_METHODS:
        raise ValueError(f"quantization method {method!r} is not supported; choose one of "
                         f"{LOAD_TIME_METHODS}")
    w32 = w.astype(jnp.float32)
    absmax = jnp.max(jnp.abs(w32), axis=tuple(range(in_ndim)))
    scale = jnp.where(absmax > 0, absmax / QMAX[method], 1.0)
    scaled = jnp.clip(w32 / scale, -QMAX[method], QMAX[method])
    if method == "int8":
        scaled = jnp.round(scaled)
    return scaled.astype(QDTYPE[method]), scale


def dequantize(qweight: jax.Array, scale: jax.Array, dtype=jnp.float32) -> jax.Array:
    """qweight [*in_dims, *out_dims], scale [*out_dims] -> w [*in_dims, *out_dims] in ``dtype``."""
    return (qweight.astype(jnp.float32) * scale).astype(dtype)


class _ShapesOnly:
    """The ``rngs`` of a shape-only model build (``SHAPES_ONLY``)."""

    def __repr__(self) -> str:
        return "SHAPES_ONLY"


# Pass as a model's ``rngs`` when only its shapes matter (the loader's ``jax.eval_shape`` build): placeholders are
# zeros, so the build traces no RNG state updates (nnx's key counter costs ~1 s over a 30-layer model's params).
SHAPES_ONLY = _ShapesOnly()


def placeholder_normal(rngs, shape) -> jax.Array:
    """A parameter's placeholder value before the loader replaces it: N(0, 0.02) float32 draws from ``rngs``
    (random weights, load_format="dummy"), or zeros for ``SHAPES_ONLY``."""
    if rngs is SHAPES_ONLY:
        return jnp.zeros(shape, jnp.float32)
    return 0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)


class QuantizedWeight(nnx.Module):
    """A linear weight held as ``qweight`` + per-output-channel ``scale`` (see the module docstring).

    Built from N(0, 0.02) placeholder values (the loader replaces them); ``in_ndim`` is how many leading axes
    the matmul contracts (the loader recovers it as ``qweight.ndim - scale.ndim``)."""

    def __init__(self, shape, method: str, axes, in_ndim: int, rngs: nnx.Rngs, activations: str = "none"):
        if method not in LOAD_TIME_METHODS:
            raise ValueError(f"QuantizedWeight holds {LOAD_TIME_METHODS} weights, not {method!r} (4-bit "
                             f"methods {INT4_METHODS} use jaxllm.models.quant_int4.Int4Weight)")
        # static (part of the graph definition, so a change means a new trace, never a stale one)
        if activations not in ("none", "dynamic"):
            raise ValueError(f"activations={activations!r}: choose 'none' or 'dynamic' (resolve_fp8_activations)")
        self.activations = activations if method == "fp8" else "none"
        self.k_minor = False  # qweight [*out_dims, *in_dims] (set by jaxllm.weights.fp8_layout after loading)
        qweight, scale = quantize(placeholder_normal(rngs, shape), method, in_ndim)
        self.qweight = nnx.Param(qweight, logical_axes=tuple(axes))
        self.scale = nnx.Param(scale, logical_axes=tuple(axes[in_ndim:]))


def k_minor_subscripts(subscripts: str, in_ndim: int) -> str:
    """The einsum for a weight stored [*out_dims, *in_dims]: "...d,dhk->...hk" -> "...d,hkd->...hk"."""
    inputs, out = subscripts.split("->")
    x_sub, w_sub = inputs.split(",")
    return f"{x_sub},{w_sub[in_ndim:]}{w_sub[:in_ndim]}->{out}"


def linears(x: jax.Array, weights, subscripts: str) -> list:
    """``[linear(x, w, subscripts) for w in weights]``; int4 weights in the nk layout that share x's input (q / k /
    v projections on Hopper) run as one grouped product: one kernel launch instead of one per weight."""
    if len(weights) > 1 and groupable(weights):
        return int4_linear_group(x, weights)
    return [linear(x, w, subscripts) for w in weights]


def linear(x: jax.Array, weight, subscripts: str) -> jax.Array:
    """``einsum(subscripts, x, weight)`` for a plain weight, a ``QuantizedWeight`` or an ``Int4Weight``.

    The subscripts must put the weight's output axes last in the output, in the weight's order (true of every
    projection: "...d,dhk->...hk", "...hk,hkd->...d", "...d,dcf->...cf", "...f,fd->...d"), so the scale
    [*out_dims] broadcasts against the output. The quantized product accumulates in float32 and is cast back
    to x.dtype after the scale."""
    if isinstance(weight, Int4Weight):
        return int4_linear(x, weight)
    if not isinstance(weight, QuantizedWeight):
        return jnp.einsum(subscripts, x, weight[...])
    qweight, scale = weight.qweight[...], weight.scale[...]
    # tied to x, so the weight's convert cannot be hoisted out of its layer (see quant_int4.int4_linear)
    x, qweight = jax.lax.optimization_barrier((x, qweight))
    if weight.activations == "dynamic":
        in_ndim = qweight.ndim - scale.ndim
        xq, x_scale = quantize_activations_fp8(x, in_ndim)
        if weight.k_minor:
            subscripts = k_minor_subscripts(subscripts, in_ndim)
        # the fp8 GEMM accumulates in float32 and writes x.dtype: half the output bytes of a float32 result, and
        # 1.2-1.25x faster GEMMs at 256 rows on the H200 (docs/quantization.md); the
        # scales are then applied in float32 (one more bf16 rounding than a float32 output)
        out = jnp.einsum(subscripts, xq, qweight, preferred_element_type=x.dtype)
        x_scale = x_scale.reshape(*x_scale.shape, *(1,) * scale.ndim)
        return (out.astype(jnp.float32) * x_scale * scale).astype(x.dtype)
    out = jnp.einsum(subscripts, x, qweight.astype(x.dtype), preferred_element_type=jnp.float32)
    return (out * scale).astype(x.dtype)
