"""Registers, spill stack and shared memory of the Pallas/Triton attention kernels, with no GPU.

Lowers the kernel for CUDA on this (CPU) machine, takes the Triton IR that Pallas prints with ``debug=True``,
and compiles it with a local ``triton`` (pip install triton==3.6.0, the GPU machine's version) for sm_90,
then reads ptxas' resource usage with the cuobjdump that triton bundles. Costs no device time: use it to
drop tile shapes that spill before timing the rest on the GPU.

  python scripts/kernel_resources.py prefill 32,64 16,64      # block_q,block_n pairs; D=256 env for head dim
  python scripts/kernel_resources.py decode 4,64
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ops.paged_attention.pallas_triton as pt  # noqa: E402
from ops.paged_attention.pallas_attention import ragged_paged_attention_pallas  # noqa: E402
from ops.paged_attention.pallas_triton import TileConfig  # noqa: E402


class _DebugPallas:
    """Stands in for ``pl`` inside pallas_triton so that every pallas_call prints its Triton IR."""

    def __init__(self, pl):
        self._pl = pl
        self.pallas_call = functools.partial(pl.pallas_call, debug=True)

    def __getattr__(self, name):
        return getattr(self._pl, name)


def triton_ir(kind, block_q, block_n, head_dim, num_q_heads=32, num_kv_heads=8) -> str:
    tokens, seqs, pages = (8192, 1, 512) if kind == "prefill" else (128, 128, 128)
    cfg = TileConfig(block_q=block_q, block_n=block_n)
    kw = {"prefill_cfg": cfg} if kind == "prefill" else {"decode_cfg": cfg}
    sd = jax.ShapeDtypeStruct
    fn = jax.jit(lambda q, kv, a, b, c: ragged_paged_attention_pallas(q, kv, a, b, c, sm_scale=0.1, **kw))
    buf = io.StringIO()
    saved, pt.pl = pt.pl, _DebugPallas(pt.pl)
    try:
        with contextlib.redirect_stdout(buf):
            fn.trace(sd((tokens, num_q_heads, head_dim), jnp.bfloat16),
                     sd((2, 20000, 16, num_kv_heads, head_dim), jnp.bfloat16), sd((seqs + 1,), jnp.int32),
                     sd((seqs,), jnp.int32), sd((seqs, pages), jnp.int32)).lower(lowering_platforms=("cuda",))
    finally:
        pt.pl = saved
    text = buf.getvalue()
    start = text.index(f"module @ragged_paged_attention_bq{block_q}_bn{block_n}_s1")
    body = text[start:text.index("\n}", start) + 2]
    body = re.sub(r' "[^"]*"\(#loc\d*\)', "", body)  # location annotations the parser rejects
    body = re.sub(r" loc\(#loc\d*\)", "", body)
    return re.sub(r" \[unknown\]", "", body)


def resources(ir_path, num_warps, num_stages):
    import triton
    from triton.backends.compiler import GPUTarget

    kernel = triton.compile(ir_path, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    cubin = f"{ir_path}.w{num_warps}s{num_stages}.cubin"
    with open(cubin, "wb") as f:
        f.write(kernel.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    usage = subprocess.run([tool, "-res-usage", cubin], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    return int(m.group(1)), int(m.group(2)), kernel.metadata.shared, kernel.asm["ptx"].count("wgmma.mma_async")


def main():
    kind, specs = sys.argv[1], sys.argv[2:]
    head_dim = int(os.environ.get("D", 128))
    for spec in specs:
        block_q, block_n = map(int, spec.split(","))
        path = f"/tmp/rpa_{kind}_bq{block_q}_bn{block_n}_d{head_dim}.ttir"
        with open(path, "w") as f:
            f.write(triton_ir(kind, block_q, block_n, head_dim))
        for warps in (4, 8):
            for stages in (2, 3):
                regs, stack, smem, wgmma = resources(path, warps, stages)
                print(f"{kind} D={head_dim} bq={block_q} bn={block_n} warps={warps} stages={stages}: "
                      f"regs={regs} spill_stack={stack}B smem={smem}B wgmma={wgmma}", flush=True)


if __name__ == "__main__":
    main()
