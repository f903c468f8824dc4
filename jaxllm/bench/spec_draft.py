"""Bench options of speculative decoding (docs/spec_decode.md).

``--draft-config``: the draft is a random-weight model (load_format="dummy", like the target) of that config
(same vocabulary as the target), optionally cut to ``--draft-layers`` decoder layers, written next to the
target's config.json. Random weights make acceptance an accident (a random draft rarely agrees with a random
target, and a random target rarely continues the prompt's n-grams), so these runs measure what speculation
costs, the bound when little is accepted.

``--echo-weights``: the random target (and draft) are made to repeat their last input token under greedy
decoding (jaxllm/bench/echo_weights.py; no shape, dtype, FLOP or byte of a step changes), so nearly every draft
is accepted: acceptance near 1, the upper bound of speculation's speed-up at these shapes. Acceptance with
trained weights is measured on CPU by scripts/spec_decode_acceptance.py.

Every run records vLLM's spec-decode counters of its ``generate`` (``spec_stats``) whenever speculation is
configured, also when nothing was drafted (then the acceptance rate is None and the draft counts are 0).
"""

from __future__ import annotations

import json
import os


def add_args(p) -> None:
    p.add_argument("--draft-config", metavar="PATH",
                   help="config.json of a random draft model: --speculative-config gets method 'draft_model' "
                        "and this model (k defaults to 4)")
    p.add_argument("--draft-layers", type=int, metavar="N", help="cut the --draft-config model to N decoder layers")
    p.add_argument("--echo-weights", action="store_true",
                   help="after the random weights are loaded, make the model (and the draft) repeat the last input "
                        "token under greedy decoding, same shapes and cost: speculation's drafts are nearly all "
                        "accepted (jaxllm/bench/echo_weights.py)")


def check_args(p, args) -> None:
    if args.draft_layers is not None and not args.draft_config:
        p.error("--draft-layers needs --draft-config")
    if args.draft_layers is not None and args.draft_layers < 1:
        p.error(f"--draft-layers {args.draft_layers} must be >= 1")
    if args.echo_weights:
        for flag, value in (("--quantization", args.quantization), ("--lora-adapters", args.lora_adapters),
                            ("--peer", args.peer), ("--structured", args.structured)):
            if value:
                p.error(f"--echo-weights does not combine with {flag} (the echo transform is of bf16 weights of "
                        "the served model alone)")


def speculative_config(args, model_dir: str) -> dict | None:
    """``args.speculative_config`` with the draft written under ``model_dir`` when ``--draft-config`` is given."""
    if not args.draft_config:
        return args.speculative_config
    with open(args.draft_config) as f:
        hf = json.load(f)
    if args.draft_layers is not None:
        hf["num_hidden_layers"] = args.draft_layers
    draft_dir = os.path.join(model_dir, "draft")
    os.makedirs(draft_dir, exist_ok=True)
    with open(os.path.join(draft_dir, "config.json"), "w") as f:
        json.dump(hf, f)
    spec = dict(args.speculative_config or {"num_speculative_tokens": 4})
    return {**spec, "method": "draft_model", "model": draft_dir}


def counters(llm) -> dict:
    """vLLM's spec-decode counters of ``llm`` so far (what ``spec_stats`` subtracts)."""
    st = llm.llm_engine.stats
    return {"num_drafts": st.spec_decode_num_drafts, "num_draft_tokens": st.spec_decode_num_draft_tokens,
            "num_accepted_tokens": st.spec_decode_num_accepted_tokens}


def spec_stats(llm, before: dict, speculative: dict | None, prompts, outputs) -> dict:
    """The bench's spec-decode fields of one ``generate`` (``before``: ``counters`` at its start): drafts,
    drafted and accepted tokens, the acceptance rate (accepted / drafted; None when nothing was drafted) and
    the tokens each verifying step emitted; with echo weights, the fraction of output tokens that repeat their
    prompt's last token (1.0: the transform works)."""
    from jaxllm.bench.echo_weights import echo_fraction

    fields: dict = {"spec_decode_acceptance_rate": None, "spec_decode_num_accepted_tokens": None}
    if speculative:
        now = counters(llm)
        d = {k: now[k] - before[k] for k in now}
        fields = {"spec_decode_num_drafts": d["num_drafts"], "spec_decode_num_draft_tokens": d["num_draft_tokens"],
                  "spec_decode_num_accepted_tokens": d["num_accepted_tokens"],
                  "spec_decode_acceptance_rate": (d["num_accepted_tokens"] / d["num_draft_tokens"]
                                                  if d["num_draft_tokens"] else None),
                  "spec_decode_tokens_per_verifying_step": (1 + d["num_accepted_tokens"] / d["num_drafts"]
                                                            if d["num_drafts"] else None)}
    if outputs is not None:
        fields["echo_fraction"] = echo_fraction(prompts, outputs)
    return fields
