"""Lists the host-driven control flow (XLA while / case / if) in the step programs of a tiny model of each
family, lowered for CUDA with the sm_90 kernel choices, on the CPU (tests/cuda_lowering.py says why it matters).

    python scripts/step_control_flow.py [--check Qwen3MoeForCausalLM --check LoRA ...]

Prints each program with a while / case / if and the source line of each; exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

# one tiny checkpoint per family we serve: head_dim 64 in bf16 so that the Hopper attention choices apply
HEADS = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             pad_token_id=0, eos_token_id=1, bos_token_id=2)
FAMILIES = {
    "LlamaForCausalLM": HEADS,
    "Qwen3ForCausalLM": HEADS,
    "Gemma2ForCausalLM": {**HEADS, "sliding_window": 16},
    "Gemma3ForCausalLM": {**HEADS, "sliding_window": 16},
    "Phi3ForCausalLM": {k: v for k, v in HEADS.items() if k != "head_dim"},
    "Olmo2ForCausalLM": {k: v for k, v in HEADS.items() if k != "head_dim"},
    "MixtralForCausalLM": {**HEADS, "num_local_experts": 4, "num_experts_per_tok": 2},
    "Qwen3MoeForCausalLM": {**HEADS, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64},
}
ENGINE = dict(dtype="bfloat16", skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=64,
              enforce_eager=True, max_model_len=256)
# the step programs of the optional features, on a dense model: {name: (arch, engine keywords)}
FEATURES = {
    "LoRA": ("LlamaForCausalLM", dict(enable_lora=True, max_loras=2, max_lora_rank=8)),
    "ngram speculation": ("LlamaForCausalLM", dict(speculative_config={"method": "ngram", "num_speculative_tokens": 2,
                                                                       "prompt_lookup_max": 3})),
    "MEAN pooling": ("Qwen3ForCausalLM", dict(runner="pooling", pooler_config={"pooling_type": "MEAN"})),
    "LAST pooling": ("Qwen3ForCausalLM", dict(runner="pooling", pooler_config={"pooling_type": "LAST"})),
}


def family_programs(arch: str, path: str, **engine) -> dict[str, object]:
    """Save a tiny ``arch`` checkpoint at ``path``, build its runner as on an sm_90 GPU (``engine``: more LLM
    keywords) and lower its step programs for CUDA."""
    from cuda_lowering import as_if_gpu, step_programs
    from hf_models import save_tiny_model

    from jaxllm import LLM

    save_tiny_model(path, arch, **FAMILIES[arch])
    with as_if_gpu():
        runner = LLM(path, **{**ENGINE, **engine}).llm_engine.runner
        return step_programs(runner)


def encoder_programs(path: str) -> dict[str, object]:
    """The BERT encoder's programs (a tiny BertModel saved at ``path``), lowered for CUDA as on an sm_90 GPU."""
    from cuda_lowering import as_if_gpu, encoder_programs as lower_encoder
    from pooling.pooling_models import save_encoder

    from jaxllm import LLM

    save_encoder(path, "BertModel")
    with as_if_gpu():
        llm = LLM(path, runner="pooling", dtype="bfloat16", enforce_eager=True, max_num_seqs=4,
                  max_num_batched_tokens=256)
        return lower_encoder(llm._encoder)


def checks(names: list[str] | None) -> dict[str, object]:
    """{check name: () -> its lowered programs} of every family, feature and the BERT encoder."""
    out = {arch: (lambda tmp, a=arch: family_programs(a, tmp)) for arch in FAMILIES}
    out |= {name: (lambda tmp, a=arch, kw=kw: family_programs(a, tmp, **kw)) for name, (arch, kw) in FEATURES.items()}
    out["BertModel"] = encoder_programs
    return {name: fn for name, fn in out.items() if not names or name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="append", choices=sorted(checks(None)), help="default: all of them")
    args = parser.parse_args()
    from cuda_lowering import report

    dirty = False
    for name, programs in checks(args.check).items():
        with tempfile.TemporaryDirectory() as tmp:
            found = report(programs(tmp))
        print(f"{name}: {'clean' if not found else ''}")
        for name, ops in found.items():
            dirty = True
            print(f"  {name}")
            for op in ops:
                print(f"    {op}")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
