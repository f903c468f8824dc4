"""Independent numpy packers of the AWQ and GPTQ 4-bit checkpoint formats (written from the formats'
documentation, not from jaxllm), and a quantizer that turns an HF fp32 weight into (q, zeros, scales).

Shapes: HF linear weight [N out, K in]; q [K, N] ints 0..15; zeros/scales [K // G, N]; w = (q - z) * s.
"""

from __future__ import annotations

import numpy as np

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AWQ GEMM: nibble i of a packed int32 holds column 8c + AWQ_ORDER[i]


def quantize_groups(w_hf: np.ndarray, group: int, sym: bool, rng: np.random.RandomState):
    """HF weight [N, K] -> (q [K, N] int 0..15, zeros [K//G, N] int 0..15, scales [K//G, N] float16), min/max
    asymmetric (or symmetric with zero 8) per group of input channels."""
    n, k = w_hf.shape
    group = k if group == -1 else group
    w = w_hf.T.reshape(k // group, group, n).astype(np.float32)
    if sym:
        scales = np.abs(w).max(axis=1) / 7.5
        zeros = np.full(scales.shape, 8, np.int64)
    else:
        lo, hi = np.minimum(w.min(axis=1), 0), np.maximum(w.max(axis=1), 0)
        scales = (hi - lo) / 15
        zeros = np.clip(np.round(-lo / np.where(scales > 0, scales, 1)), 0, 15).astype(np.int64)
        zeros[0, :3] = (0, 15, 1)  # the edge values of the zero packing
    scales = np.where(scales > 0, scales, 1e-3).astype(np.float16)
    q = np.clip(np.round(w / scales[:, None].astype(np.float32)) + zeros[:, None], 0, 15).astype(np.int64)
    return q.reshape(k, n), zeros, scales


def dequantize(q, zeros, scales) -> np.ndarray:
    """-> w [K, N] float32 (the math every format shares)."""
    k, n = q.shape
    g = k // zeros.shape[0]
    return ((q.reshape(-1, g, n) - zeros[:, None]) * scales.astype(np.float32)[:, None]).reshape(k, n)


def pack_rows(q: np.ndarray) -> np.ndarray:
    """GPTQ qweight: [K, N] -> [K // 8, N] int32, nibble j of row r = q[8r + j]."""
    out = np.zeros((q.shape[0] // 8, q.shape[1]), np.uint32)
    for j in range(8):
        out |= (q[j::8].astype(np.uint32) & 0xF) << np.uint32(4 * j)
    return out.view(np.int32)


def pack_cols(v: np.ndarray, order=tuple(range(8))) -> np.ndarray:
    """[R, N] -> [R, N // 8] int32, nibble i of column c = v[:, 8c + order[i]] (GPTQ qzeros: sequential order;
    AWQ qweight/qzeros: AWQ_ORDER)."""
    out = np.zeros((v.shape[0], v.shape[1] // 8), np.uint32)
    for i, col in enumerate(order):
        out |= (v[:, col::8].astype(np.uint32) & 0xF) << np.uint32(4 * i)
    return out.view(np.int32)


def gptq_tensors(q, zeros, scales, g_idx=None) -> dict:
    """The GPTQ v1 tensors of one linear (zeros stored minus one, wrapping in 4 bits). ``g_idx`` [K]: act order
    (q rows are then in the original channel order and ``zeros``/``scales`` indexed by g_idx)."""
    k = q.shape[0]
    group = k // zeros.shape[0]
    if g_idx is None:
        g_idx = np.arange(k) // group
    return {"qweight": pack_rows(q), "qzeros": pack_cols((zeros - 1) & 0xF), "scales": scales,
            "g_idx": g_idx.astype(np.int32)}


def awq_tensors(q, zeros, scales) -> dict:
    """The AWQ GEMM tensors of one linear: qweight [K, N // 8], qzeros [K // G, N // 8], scales [K // G, N]."""
    return {"qweight": pack_cols(q, AWQ_ORDER), "qzeros": pack_cols(zeros, AWQ_ORDER), "scales": scales}


def quantize_act_order(w_hf: np.ndarray, group: int, sym: bool, rng: np.random.RandomState):
    """GPTQ desc_act: groups follow a random channel order. -> (q [K, N], zeros, scales, g_idx [K]) with q in
    the original channel order and g_idx[k] = group of channel k."""
    k = w_hf.shape[1]
    perm = rng.permutation(k)
    q_sorted, zeros, scales = quantize_groups(w_hf[:, perm], group, sym, rng)
    q = np.empty_like(q_sorted)
    q[perm] = q_sorted
    g_idx = np.empty(k, np.int64)
    g_idx[perm] = np.arange(k) // (k if group == -1 else group)
    return q, zeros, scales, g_idx


def dequantize_g_idx(q, zeros, scales, g_idx) -> np.ndarray:
    """-> w [K, N] float32 with per-channel groups ``g_idx``."""
    return (q - zeros[g_idx]) * scales.astype(np.float32)[g_idx]
