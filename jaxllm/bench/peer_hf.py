"""The HF transformers peer: ``model.generate_batch`` (continuous batching, paged SDPA) on the benchmark's
requests, random bf16 weights. Run as a subprocess by ``jaxllm bench --peer hf`` (torch and JAX must not
share the GPU allocator in one process)."""

from __future__ import annotations

import argparse
import json
import time


def peer_arg_parser() -> argparse.ArgumentParser:
    """The arguments every HF peer subprocess takes (the bench passes the workload as JSON)."""
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--workload-json", required=True)
    p.add_argument("--max-requests", type=int)
    p.add_argument("--output", required=True)
    p.add_argument("--device", default="cuda", help="torch device (cpu only for smoke tests)")
    return p


def main() -> None:
    args = peer_arg_parser().parse_args()
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from jaxllm.bench.workloads import Workload

    w = Workload.from_json(args.workload_json)
    config = AutoConfig.from_pretrained(args.model_dir)
    prompts, output_lens = w.requests(config.vocab_size)
    if len(set(output_lens)) != 1:
        raise SystemExit("the HF peer supports one output length per run (use a fixed --output-len)")
    if args.max_requests:
        prompts = prompts[:args.max_requests]
    t0 = time.perf_counter()
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    startup = time.perf_counter() - t0
    gen = GenerationConfig(max_new_tokens=output_lens[0], do_sample=w.temperature > 0,
                           temperature=w.temperature or None, eos_token_id=-1, pad_token_id=0,
                           # our truncation when sampling (top_k 0 = off, as ours; HF's default would be 50)
                           **({"top_p": w.top_p, "top_k": w.top_k, "min_p": w.min_p or None}
                              if w.temperature > 0 else {}))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    t1 = time.perf_counter()
    with torch.no_grad():
        results = model.generate_batch(inputs=prompts, generation_config=gen, progress_bar=False)
    sync()
    wall = time.perf_counter() - t1
    out_tokens = sum(len(r.generated_tokens) for r in results.values())
    prompt_tokens = sum(len(x) for x in prompts)
    result = {"name": "transformers generate_batch", "transformers": transformers.__version__,
              "torch": torch.__version__, "num_requests": len(prompts), "startup_s": startup, "generate_s": wall,
              "output_tokens": out_tokens, "output_tok_s": out_tokens / wall,
              "total_tok_s": (out_tokens + prompt_tokens) / wall}
    with open(args.output, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
