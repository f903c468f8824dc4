"""Acceptance rate of speculative decoding with the embedded default model (SmolLM2-135M-Instruct) on prompts
whose answers repeat text of the prompt (the case prompt lookup is for), one request at a time (batch 1, where
speculation pays), with and without speculation; greedy by default, where the outputs must be token-identical;
``--temperature T`` samples instead (seeded; random requests' drafts are drawn from the draft's processed
distribution and verified by rejection sampling), its entries named ``<method>_T<T>``. Writes the counters and
the engine steps as JSON (CPU wall times include lazy compiles, so they are not compared).

Methods: "ngram" (prompt lookup) and "draft_model". No smaller trained model of SmolLM2's tokenizer is available
offline, so the draft is the default model truncated to its first ``--draft-layers`` decoder layers (same
embeddings, final norm and tied head), written as a safetensors checkpoint in a temporary folder.
``--methods`` picks what runs; entries of an existing ``--output`` file that are not run are kept.

    python scripts/spec_decode_acceptance.py --output benchmarks/spec_decode_cpu.json
    python scripts/spec_decode_acceptance.py --methods plain,draft_model --output benchmarks/spec_decode_cpu.json
    python scripts/spec_decode_acceptance.py --methods draft_model --draft-layers 24 --temperature 0.8 \
        --output benchmarks/spec_decode_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

PROMPTS = [
    "Repeat this sentence three times: The quick brown fox jumps over the lazy dog.",
    "Copy the following list exactly:\n1. apples\n2. bananas\n3. cherries\n4. dates\n5. elderberries\n",
    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n",
    "Write the numbers from 1 to 30 separated by commas: 1, 2, 3,",
    "Here is a quote: 'To be, or not to be, that is the question.' Write the quote again, in quotes:",
    "The word 'hello' written ten times: hello hello hello",
    "Translate to JSON: name Alice, age 30; name Bob, age 25; name Carol, age 41. JSON: [{\"name\": \"Alice\",",
    "Continue the pattern: red green blue red green blue red green blue",
]


# acceptance is measured with drafts in every step (one request at a time: vLLM's rule speculates for it); the
# automatic rule (docs/spec_decode.md) would stop drafting where it does not pay on this CPU
EVERY_STEP = {"disable_by_batch_size": 1}


def run(spec: dict | None, max_tokens: int, temperature: float = 0.0) -> dict:
    from jaxllm import LLM, SamplingParams

    t0 = time.perf_counter()
    # enforce_eager: compile only the shapes these prompts use (the default model's AOT ladder costs minutes on
    # CPUs); float32: verification computes several positions per query, whose rounding in bf16 may flip a
    # near-tied argmax against one-token decoding
    llm = LLM("HuggingFaceTB/SmolLM2-135M-Instruct", dtype="float32", enforce_eager=True, max_num_seqs=8,
              max_num_batched_tokens=128, speculative_config=spec)
    startup = time.perf_counter() - t0
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=0 if temperature else None)
    t1 = time.perf_counter()
    outs = [llm.generate(p, params, use_tqdm=False)[0] for p in PROMPTS]
    wall = time.perf_counter() - t1
    st = llm.llm_engine.stats
    out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "speculative_config": spec, "temperature": temperature, "startup_s": startup, "generate_s": wall, "steps": st.num_steps,
        "output_tokens": out_tokens, "output_tokens_per_step": out_tokens / st.num_steps,
        "spec_decode_num_drafts": st.spec_decode_num_drafts,
        "spec_decode_num_draft_tokens": st.spec_decode_num_draft_tokens,
        "spec_decode_num_accepted_tokens": st.spec_decode_num_accepted_tokens,
        "spec_decode_num_accepted_tokens_per_pos": st.spec_decode_num_accepted_tokens_per_pos,
        "acceptance_rate": st.spec_decode_acceptance_rate,
        "mean_tokens_per_verifying_step": (1 + st.spec_decode_num_accepted_tokens / st.spec_decode_num_drafts
                                           if st.spec_decode_num_drafts else None),
        "token_ids": [list(o.outputs[0].token_ids) for o in outs],
    }


def write_truncated_default_model(out_dir: str, num_layers: int) -> None:
    """The default model's first ``num_layers`` decoder layers (dequantized float32) as a HF safetensors
    checkpoint in ``out_dir``: the draft of the "draft_model" run."""
    from safetensors.numpy import save_file

    from jaxllm.default_model import default_gguf_path
    from jaxllm.weights.gguf import GGUFCheckpoint

    ckpt = GGUFCheckpoint(default_gguf_path())
    if not 1 <= num_layers <= ckpt.hf_config["num_hidden_layers"]:
        raise SystemExit(f"--draft-layers {num_layers} must be in 1..{ckpt.hf_config['num_hidden_layers']}")
    keep = {}
    for name, w in ckpt.tensors():
        if not name.startswith("model.layers.") or int(name.split(".")[2]) < num_layers:
            keep[name] = w.astype("float32")
    save_file(keep, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({**ckpt.hf_config, "num_hidden_layers": num_layers}, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="plain,ngram,draft_model", help="comma-separated: plain, ngram, ngram_auto, draft_model")
    p.add_argument("--num-speculative-tokens", type=int, default=4)
    p.add_argument("--prompt-lookup-max", type=int, default=4)
    p.add_argument("--prompt-lookup-min", type=int, default=2)
    p.add_argument("--draft-layers", type=int, nargs="+", default=[16, 24],
                   help="decoder layers of the truncated draft model (one run each: draft_model_<N>_layers)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0: greedy (outputs checked token-identical); > 0: seeded sampling, entries <method>_T<T>")
    p.add_argument("--output", help="write the results as JSON here (entries of methods not run are kept)")
    args = p.parse_args()
    methods = args.methods.split(",")
    result = {}
    if args.output and os.path.exists(args.output):
        with open(args.output) as f:
            result = json.load(f)
    result.update({"model": "HuggingFaceTB/SmolLM2-135M-Instruct (embedded GGUF, Q4_1), float32", "device": "cpu",
                   "num_prompts": len(PROMPTS), "batch": 1,
                   "command": "python scripts/spec_decode_acceptance.py --output benchmarks/spec_decode_cpu.json"})
    k, temp = args.num_speculative_tokens, args.temperature
    tag = f"_T{temp:g}" if temp else ""
    plain_ids = None
    if "plain" in methods:
        result["plain" + tag] = run(None, args.max_tokens, temp)
        plain_ids = result["plain" + tag].pop("token_ids")
    if "ngram" in methods:
        result["ngram" + tag] = run({"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_max":
                                     args.prompt_lookup_max, "prompt_lookup_min": args.prompt_lookup_min,
                                     **EVERY_STEP}, args.max_tokens, temp)
    if "ngram_auto" in methods:  # the same drafts under the automatic rule: drafted only where it pays here
        result["ngram_auto" + tag] = run({"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_max":
                                          args.prompt_lookup_max, "prompt_lookup_min": args.prompt_lookup_min},
                                         args.max_tokens, temp)
    drafts = [f"draft_model_{n}_layers{tag}" for n in args.draft_layers] if "draft_model" in methods else []
    for n, name in zip(args.draft_layers, drafts):
        with tempfile.TemporaryDirectory() as tmp:
            write_truncated_default_model(tmp, n)
            result[name] = run({"method": "draft_model", "model": tmp, "num_speculative_tokens": k, **EVERY_STEP},
                               args.max_tokens, temp)
        result[name]["speculative_config"]["model"] = (
            f"the default model truncated to its first {n} of 30 decoder layers (same embeddings, final norm and "
            "tied head), written as safetensors to a temporary folder (--draft-layers)")
    for name in [m + tag for m in ("ngram", "ngram_auto") if m in methods] + drafts:
        ids = result[name].pop("token_ids")
        if plain_ids is not None and not temp:  # sampled outputs differ from plain sampling's (same law)
            result[name]["greedy_outputs_identical"] = ids == plain_ids
    result["greedy_outputs_identical"] = all(v.get("greedy_outputs_identical", True) for v in result.values()
                                             if isinstance(v, dict) and "speculative_config" in v)
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    if not result["greedy_outputs_identical"]:
        raise SystemExit("greedy outputs differ with speculative decoding")


if __name__ == "__main__":
    main()
