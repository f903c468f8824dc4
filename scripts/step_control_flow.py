"""Lists the host-driven control flow (XLA while / case / if) in the step programs of a tiny model of each
family, lowered for CUDA with the sm_90 kernel choices, on the CPU (tests/cuda_lowering.py says why it matters).

    python scripts/step_control_flow.py [--check Qwen3MoeForCausalLM --check LoRA ...]
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python scripts/step_control_flow.py  # + tensor parallel

Prints each program with a while / case / if and the source line of each; exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from cuda_lowering import FAMILIES, encoder_programs, family_programs, report

# the step programs of the optional features, on a dense model: {name: (arch, engine keywords)}
FEATURES = {
    "LoRA": ("LlamaForCausalLM", {"enable_lora": True, "max_loras": 2, "max_lora_rank": 8}),
    "ngram speculation": ("LlamaForCausalLM", {"speculative_config": {"method": "ngram", "num_speculative_tokens": 2,
                                                                       "prompt_lookup_max": 3}}),
    "MEAN pooling": ("Qwen3ForCausalLM", {"runner": "pooling", "pooler_config": {"pooling_type": "MEAN"}}),
    "LAST pooling": ("Qwen3ForCausalLM", {"runner": "pooling", "pooler_config": {"pooling_type": "LAST"}}),
    "fp8 weights": ("Qwen3MoeForCausalLM", {"quantization": "fp8"}),
    "fp8 KV cache": ("LlamaForCausalLM", {"kv_cache_dtype": "fp8"}),
}
# with 2+ devices (on the CPU: XLA_FLAGS=--xla_force_host_platform_device_count=2)
PARALLEL = {
    "tensor parallel": ("LlamaForCausalLM", {"tensor_parallel_size": 2}),
    "tensor parallel MoE": ("Qwen3MoeForCausalLM", {"tensor_parallel_size": 2}),
}


def checks(names: list[str] | None, cc: tuple[int, int] = (9, 0)) -> dict[str, object]:
    """{check name: (tmp dir) -> its lowered programs} of every family, feature and the BERT encoder, as on a
    GPU of compute capability ``cc``."""
    import jax

    features = {arch: (arch, {}) for arch in FAMILIES}
    features |= {**FEATURES, **(PARALLEL if len(jax.devices()) >= 2 else {})}
    out = {name: functools.partial(family_programs, arch, cc=cc, **kw) for name, (arch, kw) in features.items()}
    out["BertModel"] = functools.partial(encoder_programs, cc=cc)
    return {name: fn for name, fn in out.items() if not names or name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="append", choices=sorted(checks(None)), help="default: all of them")
    parser.add_argument("--cc", default="9.0", help="the GPU's compute capability (default: 9.0, Hopper)")
    args = parser.parse_args()
    cc = tuple(int(part) for part in args.cc.split("."))
    dirty = False
    for name, programs in checks(args.check, cc).items():
        with tempfile.TemporaryDirectory() as tmp:
            found = report(programs(tmp))
        print(f"{name}: {'clean' if not found else ''}")
        for program, ops in found.items():
            dirty = True
            print(f"  {program}")
            for op in ops:
                print(f"    {op}")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
