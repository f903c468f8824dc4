"""End-to-end greedy check on the GPU: the bf16 engine (GPU attention kernels) vs transformers in fp32 on a
small random Llama. Reports, per prompt, how many of the first 16 greedy tokens agree, and the max
difference between the engine's logprobs and the fp32 reference's log_softmax along the engine's path.

    python scripts/e2e_check.py --output e2e.json
    python scripts/e2e_check.py --prompt-len 2100 3600 --max-num-batched-tokens 4096 --output e2e_long.json

The second form gives every prompt a prefill chunk of >= 2048 tokens: on Hopper those steps run the Mosaic GPU
prefill (the default there for long prefills; ``attention_backend="pallas_triton"`` forces the Triton one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from hf_models import save_tiny_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--output")
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--prompt-len", type=int, nargs=2, default=(5, 700), metavar=("MIN", "MAX"))
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    args = p.parse_args()
    import jax
    from jaxllm.ops.paged_attention.dispatch import default_impl

    from jaxllm import LLM, SamplingParams

    path = tempfile.mkdtemp()
    hf = save_tiny_model(path, "LlamaForCausalLM", vocab_size=2048, hidden_size=512, intermediate_size=1408,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                         max_position_embeddings=4096)
    rng = np.random.default_rng(0)
    lo, hi = args.prompt_len
    prompts = [rng.integers(1, 2048, rng.integers(lo, hi)).tolist() for _ in range(args.num_prompts)]
    llm = LLM(path, dtype="bfloat16", skip_tokenizer_init=True, max_model_len=max(1024, hi + 16),
              max_num_seqs=16, max_num_batched_tokens=args.max_num_batched_tokens, gpu_memory_utilization=0.5)
    split = llm.llm_engine.runner.kernels.prefill_split
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True, logprobs=1)
    outs = llm.generate([{"prompt_token_ids": x} for x in prompts], params, use_tqdm=False)
    rows = []
    with torch.no_grad():
        for prompt, out in zip(prompts, outs):
            ours = out.outputs[0].token_ids
            ids = torch.tensor([prompt + ours[:-1]])
            ref_lp = torch.log_softmax(hf(ids).logits[0].float(), -1).numpy()[len(prompt) - 1:]
            ref_tokens = ref_lp.argmax(-1).tolist()
            agree = next((i for i, (a, b) in enumerate(zip(ours, ref_tokens)) if a != b), len(ours))
            lp_diff = max(abs(lp[t].logprob - ref_lp[i, t]) for i, (t, lp) in enumerate(zip(ours, out.outputs[0].logprobs)))
            rows.append({"prompt_len": len(prompt), "tokens_agreeing_before_first_divergence": agree,
                         "max_abs_logprob_diff": float(lp_diff)})
    full = sum(r["tokens_agreeing_before_first_divergence"] == 16 for r in rows)
    result = {"device": jax.devices()[0].device_kind, "attention_impl": default_impl(),
              "prefill_split": split, "prompt_len": [lo, hi],
              "max_num_batched_tokens": args.max_num_batched_tokens,
              "prompts_with_16_identical_greedy_tokens": f"{full}/{len(rows)}", "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    for r in rows:
        print(r)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
