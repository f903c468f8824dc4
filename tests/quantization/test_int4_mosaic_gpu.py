"""Hopper (sm_90) correctness of the Mosaic GPU int4 kernel (ops/quant_matmul/mosaic_gpu.py) against the jnp
reference: planned tiles over decode and prefill rows and Llama-shaped products, tile variants, per-channel and
group-64 weights. Run on the GPU machine: ``python -m pytest tests/quantization/test_int4_mosaic_gpu.py -q``."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from test_int4_gpu import close, operands

from jaxllm.ops.device_info import gpu_compute_capability

pytestmark = [pytest.mark.gpu, pytest.mark.skipif((gpu_compute_capability() or (0,))[0] != 9,
                                                  reason="the Mosaic GPU int4 kernel is Hopper-only (wgmma/TMA)")]

from jaxllm.ops.quant_matmul import int4_matmul_reference  # noqa: E402
from jaxllm.ops.quant_matmul.mosaic_gpu import MosaicTiles, int4_matmul_mosaic, mosaic_plan, to_mosaic_layout  # noqa: E402


def run(args, tiles):
    x, qweight, scales, zeros = args
    wt = jax.jit(to_mosaic_layout)(qweight)
    out = jax.jit(lambda *a: int4_matmul_mosaic(*a, tiles=tiles))(x, wt, scales, zeros)
    assert out.dtype == x.dtype and out.shape == (x.shape[0], qweight.shape[1])
    return out


@pytest.mark.parametrize("m", [8, 16, 64, 128, 256])
@pytest.mark.parametrize("k,n,group", [(4096, 1024, 128), (14336, 4096, 128), (4096, 6144, 64), (2048, 512, 2048)])
def test_planned_kernel_matches_reference(m, k, n, group):
    args = operands(m, k, n, group, jnp.bfloat16, seed=m + k)
    tiles = mosaic_plan(m, k, n, group, jax.devices()[0].core_count)
    assert tiles is not None
    close(run(args, tiles), jax.jit(int4_matmul_reference)(*args), 1e-2)


@pytest.mark.parametrize("tiles", [MosaicTiles(32, 128, 1, 2), MosaicTiles(32, 128, 4, 4), MosaicTiles(32, 64, 2, 6),
                                   MosaicTiles(96, 128, 2, 3), MosaicTiles(192, 128, 1, 3)])
def test_tile_variants(tiles):
    m = 192 if tiles.tm >= 96 else 64
    args = operands(m, 2048, 1024, 128, jnp.bfloat16, seed=3)
    close(run(args, tiles), int4_matmul_reference(*args), 1e-2)


def test_bad_tiles_raise():
    args = operands(64, 2048, 1024, 128, jnp.bfloat16)
    with pytest.raises(ValueError, match="does not fit"):
        run(args, dataclasses.replace(MosaicTiles(48), splits=3))
