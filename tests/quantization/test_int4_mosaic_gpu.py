"""Hopper (sm_90) correctness of the Mosaic GPU int4 kernel (ops/quant_matmul/mosaic_gpu.py) against the jnp
reference: planned tiles over decode and prefill rows and Llama-shaped products, tile variants, per-channel and
group-64 weights. Run on the GPU machine: ``python -m pytest tests/quantization/test_int4_mosaic_gpu.py -q``."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from jaxllm.ops.device_info import gpu_compute_capability
from test_int4_gpu import close, operands

pytestmark = [pytest.mark.gpu, pytest.mark.skipif((gpu_compute_capability() or (0,))[0] != 9,
                                                  reason="the Mosaic GPU int4 kernel is Hopper-only (wgmma/TMA)")]

from jaxllm.ops.quant_matmul import (
    int4_matmul_reference,
    to_nk_layout,
)
from jaxllm.ops.quant_matmul.mosaic_gpu import MosaicTiles, int4_matmul_mosaic, mosaic_plan


def run(args, tiles):
    x, qweight, scales, zeros = args
    wt = jax.jit(to_nk_layout)(qweight)
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


@pytest.mark.parametrize("tk,group,interleave", [(256, 128, False), (128, 64, False), (256, 64, False),
                                                 (256, 2048, False), (256, 128, True), (128, 64, True)])
@pytest.mark.parametrize("m", [16, 64])
def test_several_groups_per_k_step(tk, group, interleave, m):
    """K steps wider than a group: one scale / zero row and one wgmma per group within the step (interleaved:
    a group's wgmma in flight while the next group is dequantized)."""
    args = operands(m, 2048, 1024, group, jnp.bfloat16, seed=tk + group + m)
    close(run(args, MosaicTiles(m, tk, 2, 3, interleave)), int4_matmul_reference(*args), 1e-2)


@pytest.mark.parametrize("m", [1, 5, 8, 200])
def test_rows_padded_to_the_token_tile(m):
    """M not a multiple of 16 (decode buckets of 1-8 rows, ragged prefill) on a wide N without split-K: the rows
    are padded to the token tile (a multiple of 16 rows) and the padding is cut from y."""
    args = operands(m, 1024, 32768, 128, jnp.bfloat16, seed=m)
    tiles = mosaic_plan(m, 1024, 32768, 128, jax.devices()[0].core_count)
    assert tiles.splits == 1
    close(run(args, tiles), int4_matmul_reference(*args), 1e-2)


@pytest.mark.parametrize("m", [16, 64, 200])
def test_grouped_qkv_matches_reference(m):
    """q / k / v (N = 4096 / 1024 / 1024, shared x) in one grouped launch, as the model runs them on Hopper."""
    from jaxllm.ops.quant_matmul import int4_matmul_mosaic_group
    x = operands(m, 4096, 128, 128, jnp.bfloat16, seed=m)[0]
    parts = [operands(m, 4096, n, 128, jnp.bfloat16, seed=m + n)[1:] for n in (4096, 1024, 1024)]
    tiles = mosaic_plan(m, 4096, 6144, 128, jax.devices()[0].core_count)
    weights = [(jax.jit(to_nk_layout)(q), s, z) for q, s, z in parts]
    outs = jax.jit(lambda x, w: int4_matmul_mosaic_group(x, w, tiles=tiles))(x, weights)
    for out, (q, s, z) in zip(outs, parts):
        close(out, int4_matmul_reference(x, q, s, z), 1e-2)


def test_bad_tiles_raise():
    args = operands(64, 2048, 1024, 128, jnp.bfloat16)
    with pytest.raises(ValueError, match="does not fit"):
        run(args, dataclasses.replace(MosaicTiles(48), splits=3))
    with pytest.raises(ValueError, match="does not fit"):
        run(args, MosaicTiles(24))  # the token tile must be a multiple of 16


def test_awq_model_through_the_mosaic_kernel(tmp_path, monkeypatch):
    """The default on Hopper (nk layout, Mosaic GPU kernel for 16 rows) against the packed reference."""
    import numpy as np
    from int4_checkpoints import int4_checkpoint

    import jaxllm

    qdir, _, _, _ = int4_checkpoint(tmp_path, "awq", 128, arch="LlamaForCausalLM", hidden_size=256,
                                    intermediate_size=512)
    x = np.random.RandomState(0).randint(0, 256, (2, 8)).astype(np.int32)  # 16 rows: the kernel's M % 8
    from jaxllm.ops.quant_matmul import dispatch
    calls = []
    kernel = dispatch.int4_matmul_mosaic
    monkeypatch.setattr(dispatch, "int4_matmul_mosaic", lambda *a, **kw: calls.append(kw["tiles"]) or kernel(*a, **kw))
    model = jaxllm.load_model(qdir, "bfloat16")
    assert model.layers[0].mlp.gate_up.layout == "nk"
    out = model(x)
    assert calls  # the kernel ran (o_proj, gate_up, down; q / k / v as one group when k / v fit the tiles)
    ref = jaxllm.load_model(qdir, "bfloat16", quant_matmul_impl="reference")
    assert ref.layers[0].mlp.gate_up.layout == "packed"
    close(out, ref(x), 2e-2)
