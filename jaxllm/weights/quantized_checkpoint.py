"""Pre-quantized checkpoints (AWQ, GPTQ, fp8): their tensors, rewritten into our quantized layouts.

``quantized_tensors(cfg, tensors)`` wraps the checkpoint's (name, array, file) stream; the loader then checks
and places the result like any checkpoint (``mappings.key_map`` gives the keys and shapes of these layouts).

* AWQ / GPTQ (``cfg.quantization`` "awq"/"gptq"): the tensors of one linear layer (``<prefix>.qweight``,
  ``.qzeros``, ``.scales`` and GPTQ's ``.g_idx``) are collected, then converted on the host, one layer at a
  time, into the packed layout of ``jaxllm.ops.quant_matmul`` (HF output order, N flattened):
  ``<prefix>.qweight`` [K // 8, N] int32, ``.scales`` [K // G, N] float16, ``.zeros`` [K // G, N] int8 (0..15)
  and, for act order, ``.perm`` [K] int32.
  - AWQ (GEMM): qweight [K, N // 8] and qzeros [K // G, N // 8] packed along N, nibble i of an int32 = column
    8c + [0, 2, 4, 6, 1, 3, 5, 7][i]; scales [K // G, N]. Repacked along K.
  - GPTQ (v1): qweight [K // 8, N] packed along K (already our layout); qzeros [K // G, N // 8] packed along N in
    order, each stored as zero - 1 in 4 bits, read back as (stored + 1) & 15 like GPTQModel's v1 -> v2
    conversion (exllama-style kernels read 16 where the zero was 0: only asymmetric groups whose zero point
    is 0 differ; symmetric checkpoints store 7 for 8 everywhere); g_idx [K] = group of each
    input channel. Without act order g_idx must be k // G (and is dropped). With act order (desc_act) the
    channels are sorted by group (stable), which makes the groups contiguous; the sort is ``perm`` and the
    activation is gathered by it in the matmul. gate_proj and up_proj see the same input, so GPTQ gives them
    the same order; they share one ``perm`` (a difference is an error).
* fp8 (``cfg.quant_from_checkpoint``): ``<prefix>.weight`` float8_e4m3fn [N, K] passes through;
  ``<prefix>.weight_scale`` (scalar, [1], [N] or [N, 1]) becomes float32 [N] (a per-tensor scale broadcast to
  every channel). ``input_scale`` / ``input_scale_ub`` (static activation scales) are skipped: activations get
  dynamic per-token scales on GPUs with fp8 tensor cores (``fp8_activations``, default "auto"), or stay in the
  model dtype (weight-only) elsewhere or with fp8_activations="none".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import ml_dtypes
import numpy as np

from jaxllm.config import ModelConfig
from jaxllm.quantization_config import INT4_METHODS
from jaxllm.weights.mappings import expert_linears, linear_layers

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_FP8_SKIPPED = ("input_scale", "input_scale_ub")


class QuantizedCheckpointError(ValueError):
    """A quantized tensor does not match the checkpoint's quantization_config (names the key and the file)."""


def _unpack_cols(packed: np.ndarray, order) -> np.ndarray:
    """[R, C] int32 -> [R, 8C] int8, column 8c + order[i] from nibble i of packed column c."""
    u = np.ascontiguousarray(packed).view(np.uint32)
    out = np.empty((u.shape[0], u.shape[1] * 8), np.int8)
    for i, col in enumerate(order):
        out[:, col::8] = (u >> np.uint32(4 * i)) & 0xF
    return out


def _unpack_rows(packed: np.ndarray) -> np.ndarray:
    """[R, N] int32 -> [8R, N] int8, row 8r + j from nibble j of packed row r."""
    u = np.ascontiguousarray(packed).view(np.uint32)
    out = np.empty((u.shape[0] * 8, u.shape[1]), np.int8)
    for j in range(8):
        out[j::8] = (u >> np.uint32(4 * j)) & 0xF
    return out


def _pack_rows(q: np.ndarray) -> np.ndarray:
    """[K, N] values 0..15 -> [K // 8, N] int32 (inverse of ``_unpack_rows``)."""
    out = np.zeros((q.shape[0] // 8, q.shape[1]), np.uint32)
    for j in range(8):
        out |= q[j::8].astype(np.uint32) << np.uint32(4 * j)
    return out.view(np.int32)


def _expect(name: str, array: np.ndarray, shape: tuple, source: str) -> None:
    if tuple(array.shape) != shape:
        raise QuantizedCheckpointError(f"shape mismatch for {name!r} in {source}: expected {shape}, got "
                                       f"{tuple(array.shape)}")


class _Int4Converter:
    """Collects the tensors of each quantized linear and converts a layer once it is complete."""

    def __init__(self, cfg: ModelConfig):
        self.cfg, self.method = cfg, cfg.quantization
        self.layers = {}  # HF prefix -> (N, K)
        for i in range(cfg.num_layers):
            for lin in linear_layers(cfg, i):
                self.layers[lin.hf_prefix] = (lin.n, lin.k)
        self.pending: dict[str, dict[str, tuple[np.ndarray, str]]] = {}
        self.shared_perm: dict[str, np.ndarray] = {}  # "model.layers.i.mlp" -> perm of gate_proj/up_proj

    def group(self, n: int, k: int) -> int:
        return k if self.cfg.quant_group_size == -1 else self.cfg.quant_group_size

    def needed(self) -> tuple[str, ...]:
        return ("qweight", "qzeros", "scales") + (("g_idx",) if self.cfg.quant_desc_act else ())

    def add(self, prefix: str, part: str, array: np.ndarray, source: str) -> Iterator[tuple[str, np.ndarray, str]]:
        n, k = self.layers[prefix]
        g = self.group(n, k)
        if part == "g_idx" and not self.cfg.quant_desc_act:
            _expect(f"{prefix}.g_idx", array, (k,), source)
            if not np.array_equal(np.asarray(array), np.arange(k) // g):
                raise QuantizedCheckpointError(
                    f"{prefix}.g_idx in {source} is not the channel order k // {g}, but the quantization_config "
                    f"has desc_act=false")
            return
        entry = self.pending.setdefault(prefix, {})
        if part in entry:
            raise QuantizedCheckpointError(f"duplicate key {prefix}.{part!s} in {source}")
        entry[part] = (array, source)
        if all(p in entry for p in self.needed()):
            del self.pending[prefix]
            yield from self._convert(prefix, n, k, g, entry)

    def _convert(self, prefix, n, k, g, entry) -> Iterator[tuple[str, np.ndarray, str]]:
        source = entry["qweight"][1]
        arr = {p: np.asarray(a) for p, (a, _) in entry.items()}
        awq = self.method == "awq"
        _expect(f"{prefix}.qweight", arr["qweight"], (k, n // 8) if awq else (k // 8, n), source)
        _expect(f"{prefix}.qzeros", arr["qzeros"], (k // g, n // 8), entry["qzeros"][1])
        _expect(f"{prefix}.scales", arr["scales"], (k // g, n), entry["scales"][1])
        q = zeros = None
        if awq:
            q = _unpack_cols(arr["qweight"], AWQ_ORDER)  # [K, N]
            zeros = _unpack_cols(arr["qzeros"], AWQ_ORDER)
        else:
            zeros = (_unpack_cols(arr["qzeros"], range(8)) + 1) & 0xF  # v1 stores zero - 1
        perm = None
        if self.cfg.quant_desc_act:  # rows follow the channels sorted by group
            perm = self._sort_by_group(prefix, k, g, arr["g_idx"], entry["g_idx"][1])
            q = _unpack_rows(arr["qweight"])[perm]
        qweight = arr["qweight"].view(np.int32) if q is None else _pack_rows(q)
        yield f"{prefix}.qweight", qweight, source
        yield f"{prefix}.scales", arr["scales"], entry["scales"][1]
        yield f"{prefix}.zeros", zeros.astype(np.int8), entry["qzeros"][1]
        if perm is not None:
            yield from self._perm_tensor(prefix, perm, source)

    @staticmethod
    def _sort_by_group(prefix, k, g, g_idx, source) -> np.ndarray:
        g_idx = np.asarray(g_idx).astype(np.int64)
        _expect(f"{prefix}.g_idx", g_idx, (k,), source)
        perm = np.argsort(g_idx, kind="stable").astype(np.int32)
        if not np.array_equal(g_idx[perm], np.arange(k) // g):
            raise QuantizedCheckpointError(f"{prefix}.g_idx in {source} does not give every group exactly {g} "
                                           f"input channels")
        return perm

    def _perm_tensor(self, prefix, perm, source):
        mlp, _, proj = prefix.rpartition(".")
        if proj not in ("gate_proj", "up_proj"):
            yield f"{prefix}.perm", perm, source
            return
        seen = self.shared_perm.get(mlp)
        if seen is None:
            self.shared_perm[mlp] = perm
            yield f"{mlp}.gate_proj.perm", perm, source
        elif not np.array_equal(seen, perm):
            raise QuantizedCheckpointError(f"{mlp}.gate_proj and {mlp}.up_proj have different act orders "
                                           f"(g_idx) in {source}; they share one input and one order here")

    def finish(self) -> None:
        if self.pending:
            prefix, entry = next(iter(self.pending.items()))
            missing = [p for p in self.needed() if p not in entry]
            raise QuantizedCheckpointError(f"checkpoint is missing {prefix}.{missing[0]} ({len(self.pending)} "
                                           f"quantized layer(s) incomplete)")


def _int4_stream(cfg: ModelConfig, tensors) -> Iterator[tuple[str, np.ndarray, str]]:
    conv = _Int4Converter(cfg)
    parts = ("qweight", "qzeros", "scales", "g_idx")
    for name, array, source in tensors:
        prefix, _, part = name.rpartition(".")
        if prefix in conv.layers:
            if part == "weight":
                raise QuantizedCheckpointError(f"{name!r} in {source} is unquantized, but the checkpoint's "
                                               f"quantization_config says {cfg.quantization}")
            if part in parts:
                yield from conv.add(prefix, part, array, source)
                continue
        yield name, array, source
    conv.finish()


def _fp8_stream(cfg: ModelConfig, tensors) -> Iterator[tuple[str, np.ndarray, str]]:
    outs = {lin.hf_prefix: lin.n for i in range(cfg.num_layers) for lin in linear_layers(cfg, i)}
    outs.update({row[0]: row[2] for i in range(cfg.num_layers) if cfg.is_moe_layer(i)
                 for row in expert_linears(cfg, i)})  # MoE experts' projections
    for name, array, source in tensors:
        prefix, _, part = name.rpartition(".")
        if prefix in outs and part in _FP8_SKIPPED:
            continue
        if prefix in outs and part == "weight" and array.dtype != ml_dtypes.float8_e4m3fn:
            raise QuantizedCheckpointError(f"{name!r} in {source} is {array.dtype}, but an fp8 checkpoint's linear "
                                           f"weights must be float8_e4m3fn")
        if prefix in outs and part == "weight_scale":
            n = outs[prefix]
            scale = np.asarray(array, np.float32)
            if scale.size == 1:
                scale = np.full((n,), scale.reshape(()), np.float32)
            elif scale.shape in ((n,), (n, 1)):
                scale = scale.reshape(n)
            else:
                raise QuantizedCheckpointError(f"{name!r} in {source} has shape {tuple(array.shape)}: expected a "
                                               f"per-tensor scale or a per-channel one of shape ({n},) or ({n}, 1)")
            yield name, scale, source
            continue
        yield name, array, source


def quantized_tensors(cfg: ModelConfig, tensors: Iterable[tuple[str, np.ndarray, str]]):
    """The checkpoint stream in our quantized layouts (unchanged for unquantized checkpoints)."""
    if cfg.quantization in INT4_METHODS:
        return _int4_stream(cfg, tensors)
    if cfg.quant_from_checkpoint:
        return _fp8_stream(cfg, tensors)
    if cfg.mxfp4_experts:  # (gpt-oss: MXFP4 experts, dequantized to the model's dtype)
        from jaxllm.weights.mxfp4 import mxfp4_tensors

        return mxfp4_tensors(cfg, tensors)
    if cfg.quant_block_size:  # (block-wise fp8: dequantized here, re-quantized per channel at load)
        from jaxllm.weights.block_fp8 import block_fp8_stream, ml_dtypes_of

        return block_fp8_stream(tensors, cfg.quant_block_size, ml_dtypes_of(cfg.dtype))
    return iter(tensors)
