"""GPU (sm_80+) correctness of the fused int4 kernel against the jnp reference, and of a 4-bit model through it.
Run on the GPU machine: ``python -m pytest tests/quantization/test_int4_gpu.py -q`` (or ``bash scripts/device.sh gpu-tests``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from int4_formats import pack_rows

pytestmark = pytest.mark.gpu

from jaxllm.ops.device_info import gpu_compute_capability
from jaxllm.ops.quant_matmul import (
    Int4Tiles,
    choose_impl,
    int4_matmul,
    int4_matmul_pallas,
    int4_matmul_reference,
    plan,
)


def operands(m, k, n, group, dtype, seed=0):
    rng = np.random.RandomState(seed)
    q = rng.randint(0, 16, (k, n))
    zeros = rng.randint(0, 16, (k // group, n))
    scales = (rng.rand(k // group, n) * 0.004 + 1e-3).astype(np.float16)
    x = rng.randn(m, k).astype(np.float32)
    return (jnp.asarray(x, dtype), jnp.asarray(pack_rows(q)), jnp.asarray(scales), jnp.asarray(zeros, jnp.int8))


def close(out, ref, tol):
    out, ref = np.asarray(out, np.float32), np.asarray(ref, np.float32)
    err = np.abs(out - ref).max() / np.abs(ref).max()
    assert err <= tol, err


@pytest.mark.parametrize("m", [1, 64, 200])
@pytest.mark.parametrize("k,n,group", [(4096, 1024, 128), (14336, 4096, 128), (4096, 6144, 64), (512, 384, 32),
                                       (4096, 512, 4096)])
def test_kernel_matches_reference_bf16(m, k, n, group):
    args = operands(m, k, n, group, jnp.bfloat16, seed=m + k)
    tiles = plan(m, k, n, group)
    assert tiles is not None
    out = jax.jit(lambda *a: int4_matmul_pallas(*a, tiles=tiles))(*args)
    assert out.dtype == jnp.bfloat16 and out.shape == (m, n)
    close(out, jax.jit(int4_matmul_reference)(*args), 1e-2)


@pytest.mark.parametrize("group", [128, 32])
@pytest.mark.parametrize("tiles", [Int4Tiles(16, 32, 32, 1), Int4Tiles(16, 128, 128, 4), Int4Tiles(32, 64, 64, 2),
                                   Int4Tiles(64, 128, 128, 1, num_warps=8), Int4Tiles(128, 128, 64, 1, 8, 2),
                                   Int4Tiles(16, 64, 128, 2, split_dot=True), Int4Tiles(16, 64, 256, 1, split_dot=True),
                                   Int4Tiles(64, 128, 128, 1, 8, split_dot=True),
                                   Int4Tiles(64, 128, 128, 2, 4, 3, True, True), Int4Tiles(128, 128, 128, 1, 8, 3, True, True),
                                   Int4Tiles(16, 64, 256, 1, 4, 3, True, True)])
def test_kernel_tile_variants(tiles, group):
    if not tiles.fits(2048, 1024, group):
        pytest.skip(f"{tiles} does not fit group {group}")
    args = operands(100, 2048, 1024, group, jnp.bfloat16, seed=1)
    close(jax.jit(lambda *a: int4_matmul_pallas(*a, tiles=tiles))(*args), int4_matmul_reference(*args), 1e-2)


def test_split_variant_through_plan():
    tiles = plan(3, 4096, 4096, 128, variant="split")
    assert tiles.split_dot
    args = operands(3, 4096, 4096, 128, jnp.bfloat16, seed=5)
    close(jax.jit(lambda *a: int4_matmul_pallas(*a, tiles=tiles))(*args), int4_matmul_reference(*args), 1e-2)


def test_kernel_float16_input_and_dispatch():
    args = operands(5, 1024, 256, 128, jnp.float16, seed=2)
    close(int4_matmul_pallas(*args), int4_matmul_reference(*args), 1e-2)
    hopper = gpu_compute_capability()[0] == 9  # Hopper: Mosaic (nk, bf16) or Triton (packed) for decode rows
    assert choose_impl(64) == ("pallas_triton" if hopper else "reference") and choose_impl(65) == "reference"
    assert choose_impl(64, "nk") == ("mosaic_gpu" if hopper else "reference")
    big = operands(2048, 1024, 256, 128, jnp.float16, seed=3)
    close(int4_matmul(*big, impl="pallas_triton"), int4_matmul_reference(*big), 1e-2)  # forced for any M


def test_awq_model_through_the_kernel(tmp_path):
    from int4_checkpoints import int4_checkpoint

    import jaxllm

    qdir, _, _, _ = int4_checkpoint(tmp_path, "awq", 64, arch="LlamaForCausalLM", hidden_size=128,
                                    intermediate_size=256)
    x = np.random.RandomState(0).randint(0, 256, (1, 12)).astype(np.int32)
    ref = np.asarray(jaxllm.load_model(qdir, "bfloat16", quant_matmul_impl="reference")(x))
    close(jaxllm.load_model(qdir, "bfloat16", quant_matmul_impl="pallas_triton")(x), ref, 2e-2)
