"""The benchmark table: ``jaxllm bench --summarize DIR`` rebuilds DIR/README.md from the results in DIR.

DIR holds one ``jaxllm bench`` JSON per configuration, named after its preset (``throughput/b2-awq.json``, see
presets.py), and optionally ``peers.json``: figures of other engines measured on the same GPU outside this
tool (a list of {"peer", "workload", "card", "output_tok_s", "jaxllm_output_tok_s", "source"}). HF
transformers runs measured in the same invocation (``--peer hf``) are read from the results themselves.

A row compared with a baseline (a quantized run against bf16) shows the ratio only when the result carries
``baseline`` (the baseline's output tok/s on the same machine). ``--same-machine`` writes that field into
every result of DIR whose baseline preset is in DIR too: use it on one device call's output directory, never
on results gathered from several machines.
"""

from __future__ import annotations

import glob
import json
import os
import re

from jaxllm.bench.presets import PRESETS

HEADER = """# Benchmarks

Current throughput of each configuration, one `jaxllm bench` result per row (JSON in `throughput/`, named
after its preset: `jaxllm bench --preset NAME` reproduces it, `bash scripts/device.sh NAME ...` runs it on the
GPU machine). Random weights of the real shapes (`load_format="dummy"`), random prompt ids, `ignore_eos=True`,
max_num_seqs 256, jaxllm defaults. The roofline is ../shared/BENCHMARKS.md's bound computed by the bench for
the run's own workload (quantized runs count their weight and KV bytes; fp8 W8A8 runs their linear FLOPs at
the fp8 GEMM rate; under tensor parallelism the bound of N ideal GPUs), with the H200's peaks, the reference of
every target. A run on another card is also held to that card's own measured peaks
(jaxllm/bench/card_roofline.py). "x baseline" is measured against the baseline preset in the same device call.
Regenerate this file with `jaxllm bench --summarize benchmarks/`.
"""


def results_dir(directory: str) -> str:
    """Where the results lie: ``directory/throughput`` when it exists, else ``directory`` itself."""
    sub = os.path.join(directory, "throughput")
    return sub if os.path.isdir(sub) else directory


def load_results(directory: str) -> dict[str, dict]:
    """{preset name: result} for every ``*.json`` of ``results_dir(directory)``."""
    results = {}
    for path in sorted(glob.glob(os.path.join(results_dir(directory), "*.json"))):
        with open(path) as f:
            r = json.load(f)
        if isinstance(r, dict) and "jaxllm" in r and "roofline" in r:
            results[os.path.splitext(os.path.basename(path))[0]] = r
    return results


def attach_baselines(directory: str) -> None:
    """Write ``baseline`` into each result whose preset's baseline was measured in the same directory."""
    results = load_results(directory)
    for name, r in results.items():
        base = PRESETS[name].baseline if name in PRESETS else None
        if base in results:
            r["baseline"] = {"preset": base, "output_tok_s": results[base]["jaxllm"]["output_tok_s"]}
            with open(os.path.join(results_dir(directory), name + ".json"), "w") as f:
                json.dump(r, f, indent=2)


def _gpus(r: dict) -> int:
    sizes = [re.search(rf"--{name}-parallel-size (\d+)", r.get("command", "")) for name in ("tensor", "data")]
    return (int(sizes[0].group(1)) if sizes[0] else 1) * (int(sizes[1].group(1)) if sizes[1] else 1)


def _command(r: dict) -> str:
    """The run's command without its output path (a path on the machine that ran it)."""
    return re.sub(r" --output \S+", "", r.get("command", "")).strip()


def _startup(o: dict) -> str:
    return f"{o['startup_s']:.0f}" if o.get("startup_s") is not None else "-"


def _card_pct(r: dict) -> str:
    """The output fraction of the card's own roofline (card_roofline.py), "-" on the reference card."""
    return f"{r['pct_card_roofline_output']:.1f}%" if "pct_card_roofline_output" in r else "-"


def throughput_row(name: str, r: dict) -> str:
    """One Markdown row: configuration, card, output / total tok/s, % of roofline, GPU busy, start-up and the
    ratio to a same-machine baseline."""
    o, roof = r["jaxllm"], r["roofline"]
    what = PRESETS[name].what if name in PRESETS else r["workload"]["name"]
    gpus = _gpus(r)
    card = f"{gpus} x {o['device']}" if gpus > 1 else o["device"]
    busy = (o.get("gpu_busy") or {}).get("mean_pct")
    base = r.get("baseline")
    ratio = f"{o['output_tok_s'] / base['output_tok_s']:.2f}x {base['preset']}" if base else "-"
    return (f"| `{name}` | {what} | {card} | {o['output_tok_s']:,.0f} | {o['total_tok_s']:,.0f} | "
            f"{r['pct_roofline_output']:.1f}% of {roof['output_tok_s']:,.0f} | {_card_pct(r)} | "
            f"{'-' if busy is None else f'{busy:.0f}%'} | {_startup(o)} | {ratio} |")


def spec_row(name: str, r: dict) -> str:
    """One row of the speculative-decoding table: drafts accepted, tokens per verifying step, the steps that
    verified drafts, the echo weights' share of repeated tokens (``--echo-weights``) and the baseline ratio."""
    o, base = r["jaxllm"], r.get("baseline")
    rate, per_step, drafts = (o.get(k) for k in ("spec_decode_acceptance_rate",
                                                 "spec_decode_tokens_per_verifying_step", "spec_decode_num_drafts"))
    fmt = lambda x, spec: "-" if x is None else format(x, spec)
    ratio = f"{o['output_tok_s'] / base['output_tok_s']:.2f}x {base['preset']}" if base else "-"
    return (f"| `{name}` | {o['device']} | {fmt(rate, '.1%')} | {fmt(per_step, '.2f')} | "
            f"{fmt(drafts, 'd')} / {o['steps']} | {fmt(o.get('echo_fraction'), '.1%')} | {ratio} |")


def peer_rows(results: dict[str, dict], peers: list[dict]) -> list[str]:
    """Rows of the peer table: HF runs of the same invocation, then the measured figures of peers.json."""
    rows = []
    for name, r in results.items():
        p = r.get("peer_hf")
        if p:
            ours = r["jaxllm"]["output_tok_s"]
            rows.append(f"| HF transformers {p.get('transformers', '')} `generate_batch` | `{name}` "
                        f"({p['num_requests']} requests) | {r['jaxllm']['device']} | "
                        f"{p['output_tok_s']:,.0f} | {ours:,.0f} | {ours / p['output_tok_s']:.1f}x | "
                        "same invocation (`--peer hf`) |")
    for p in peers:
        ours = p["jaxllm_output_tok_s"]
        rows.append(f"| {p['peer']} | {p['workload']} | {p['card']} | {p['output_tok_s']:,.0f} | "
                    f"{ours:,.0f} | {ours / p['output_tok_s']:.1f}x | {p['source']} |")
    return rows


def summarize(directory: str) -> str:
    """The Markdown of ``directory``'s results, rows in preset order (unknown names last)."""
    results = load_results(directory)
    order = {n: i for i, n in enumerate(PRESETS)}
    names = sorted(results, key=lambda n: (order.get(n, len(order)), n))
    lines = [HEADER, ("| preset | configuration | card | output tok/s | total tok/s | % of roofline (output) "
                      "| % of the card's own roofline | GPU busy | start-up s | x baseline |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [throughput_row(n, results[n]) for n in names]
    spec = [spec_row(n, results[n]) for n in names if results[n]["jaxllm"].get("speculative_config")]
    if spec:
        lines += ["", "## Speculative decoding", "",
                  ("| preset | card | drafted tokens accepted | tokens per verifying step | sequence-steps with "
                   "drafts / engine steps | output tokens echoing the prompt | x baseline |"),
                  "|---|---|---|---|---|---|---|", *spec]
    peers_path = os.path.join(directory, "peers.json")
    peers = []
    if os.path.exists(peers_path):
        with open(peers_path) as f:
            peers = json.load(f)
    prows = peer_rows(results, peers)
    if prows:
        lines += ["", "## Peers on the same GPU", "",
                  ("| peer | workload | card | peer output tok/s | jaxllm output tok/s | jaxllm / peer "
                   "| measured |"),
                  "|---|---|---|---|---|---|---|", *prows]
    lines += ["", "## Commands", ""]
    lines += [f"- `{n}`: `{_command(results[n])}`" for n in names]
    return "\n".join(lines) + "\n"


def write_summary(directory: str, same_machine: bool = False) -> str:
    """Rebuild ``directory``/README.md (after attaching same-machine baselines if asked); returns its text."""
    if same_machine:
        attach_baselines(directory)
    text = summarize(directory)
    with open(os.path.join(directory, "README.md"), "w") as f:
        f.write(text)
    return text
