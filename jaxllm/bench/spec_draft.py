"""Bench options of draft-model speculative decoding (docs/spec_decode.md): the draft is a random-weight model
(load_format="dummy", like the target) of the config ``--draft-config`` (same vocabulary as the target),
optionally cut to ``--draft-layers`` decoder layers, written next to the target's config.json.

Random weights make acceptance an accident (a random draft rarely agrees with a random target), so these runs
measure what the draft costs, the bound when little is accepted; acceptance with trained weights is measured on
CPU by scripts/spec_decode_acceptance.py.
"""

from __future__ import annotations

import json
import os


def add_args(p) -> None:
    p.add_argument("--draft-config", metavar="PATH",
                   help="config.json of a random draft model: --speculative-config gets method 'draft_model' "
                        "and this model (k defaults to 4)")
    p.add_argument("--draft-layers", type=int, metavar="N", help="cut the --draft-config model to N decoder layers")


def check_args(p, args) -> None:
    if args.draft_layers is not None and not args.draft_config:
        p.error("--draft-layers needs --draft-config")
    if args.draft_layers is not None and args.draft_layers < 1:
        p.error(f"--draft-layers {args.draft_layers} must be >= 1")


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
