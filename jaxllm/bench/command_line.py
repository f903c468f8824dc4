"""``jaxllm bench`` / scripts/bench_throughput.py: vLLM-style offline throughput with roofline and peer.

    jaxllm bench --workload B1 --output b1.json
    jaxllm bench --preset b2-awq --gpu-busy --output benchmarks/throughput/b2-awq.json
    jaxllm bench --config my_config.json --num-requests 64 --prompt-len 128 512 --output-len 64 64
    jaxllm bench --summarize benchmarks/          # rebuild benchmarks/README.md from the results there
    jaxllm bench --workload E-bert --peer hf      # embedding docs/s (E-bert, E-qwen3: jaxllm.bench.embed)

A preset (presets.py) is a named set of these arguments, one per row of benchmarks/README.md; arguments given
after it override its own.

Weights are random (load_format="dummy"), prompts random ids, ignore_eos=True. Start-up (construction, weight
init, compile) is timed apart from ``generate``. ``--peer hf`` runs transformers' continuous batching on the
same requests first, in a subprocess (so its CUDA memory is gone before JAX takes its share).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from jaxllm.bench import kv_offload, spec_draft
from jaxllm.bench.embed import EMBED_WORKLOADS
from jaxllm.bench.presets import PRESETS, preset_args
from jaxllm.bench.workloads import WORKLOADS, Workload
from jaxllm.engine_args import ATTENTION_BACKENDS, QUANT_MATMUL_IMPLS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jaxllm bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_selection_args(p)
    _add_request_args(p)
    _add_engine_args(p)
    _add_peer_args(p)
    _add_measure_args(p)
    kv_offload.add_args(p)
    spec_draft.add_args(p)
    p.add_argument("--output", help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.preset:  # the preset's arguments first, so the ones given override them
        args = p.parse_args(preset_args(args.preset) + list(sys.argv[1:] if argv is None else argv))
    if args.summarize:
        return args
    _check_args(p, args)
    return args


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    """Which run: a preset, a named workload or a custom config, or only a summary."""
    p.add_argument("--preset", choices=list(PRESETS), help="a named configuration of benchmarks/README.md")
    p.add_argument("--summarize", metavar="DIR", help="only rebuild DIR/README.md from the results in DIR")
    p.add_argument("--same-machine", action="store_true",
                   help="with --summarize: DIR is one device call's output; record each run's baseline ratio")
    p.add_argument("--workload", choices=sorted(WORKLOADS) + sorted(EMBED_WORKLOADS),
                   help="a named workload of BENCHMARKS.md (E-*: embedding throughput, jaxllm.bench.embed)")
    p.add_argument("--config", help="custom workload: an HF config.json of the architecture")


def _add_request_args(p: argparse.ArgumentParser) -> None:
    """The requests: how many, their lengths and sampling."""
    p.add_argument("--num-requests", type=int, help="override the request count")
    p.add_argument("--prompt-len", type=int, nargs=2, metavar=("MIN", "MAX"))
    p.add_argument("--output-len", type=int, nargs=2, metavar=("MIN", "MAX"))
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float, help="SamplingParams.top_p of every request (default: the workload's)")
    p.add_argument("--top-k", type=int, help="SamplingParams.top_k of every request (default: the workload's)")
    p.add_argument("--min-p", type=float, help="SamplingParams.min_p of every request (default: the workload's)")
    p.add_argument("--per-request-seeds", action=argparse.BooleanOptionalAction, default=None,
                   help="request i samples with seed = --seed + i (default: the workload's)")
    p.add_argument("--seed", type=int, default=0)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    """The LLM's keywords and what the model serves (quantization, LoRA, kernels)."""
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                   help="weights and activations, ours and the peer's (default: %(default)s; float32 on the CPU)")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int,
                   help="default: the LLM's (8192 on GPUs; 32768 for the embedding workloads' pooling models)")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--data-parallel-size", type=int, default=1,
                   help="engine replicas (each on --tensor-parallel-size GPUs); steps and host time are replica 0's")
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--background-compile", choices=["on", "off", "overlap"],
                   help="LLM(background_compile=...): on / off (default: the engine's, on in one process); the "
                        "steady state is timed once every program is compiled, except with overlap (on, and "
                        "generate starts as soon as LLM returns: the user's view of a cold start)")
    p.add_argument("--moe-matmul-impl", choices=["pallas_triton", "ragged_dot", "reference"],
                   help="MoE models: the experts' grouped matmul (default: Pallas on NVIDIA GPUs)")
    p.add_argument("--enable-expert-parallel", action="store_true",
                   help="MoE models: whole experts per GPU instead of a slice of every expert (vLLM's keyword)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8", "fp8_e4m3", "fp8_e5m2"],
                   help="KV cache storage (vLLM's kv_cache_dtype; default: %(default)s = the model's dtype)")
    p.add_argument("--quantization", choices=["int8", "fp8", "awq", "gptq"],
                   help="linear layers: int8/fp8 weight-only, or 4-bit awq/gptq (random packed weights, group 128)")
    p.add_argument("--fp8-activations", choices=["auto", "none", "dynamic"],
                   help="with --quantization fp8: 'dynamic' quantizes activations per token too (W8A8, fp8 GEMMs), "
                        "'none' keeps weight-only, 'auto' (the engine's default) is dynamic on sm_89+ GPUs; "
                        "passed as LLM(fp8_activations=...)")
    p.add_argument("--attention-backend", choices=list(ATTENTION_BACKENDS),
                   help="force a paged-attention implementation (LLM(attention_backend=...); default: by device)")
    p.add_argument("--quant-matmul-impl", choices=list(QUANT_MATMUL_IMPLS),
                   help="force the int4 matmul implementation (LLM(quant_matmul_impl=...); default: by rows)")
    p.add_argument("--lora-adapters", type=int, default=0, metavar="N",
                   help="serve N random LoRA adapters (all target modules), request i using adapter i %% N "
                        "(enable_lora, max_loras=N); 0: no LoRA")
    p.add_argument("--lora-rank", type=int, default=16, help="rank of the --lora-adapters (default: %(default)s)")


def _add_peer_args(p: argparse.ArgumentParser) -> None:
    """The HF transformers peer run on the same requests."""
    p.add_argument("--peer", choices=["hf"], help="also run HF transformers' generate_batch on the same requests")
    p.add_argument("--peer-max-requests", type=int, help="run the peer on the first N requests only")
    p.add_argument("--peer-device", default="cuda", help="torch device of the peer (default: %(default)s)")
    p.add_argument("--peer-threads", type=int,
                   help="the peer's torch.set_num_threads (default: torch's; on a busy CPU fewer may be faster)")
    p.add_argument("--peer-api", default="generate_batch", choices=["generate_batch", "generate"],
                   help="the peer's transformers API: continuous batching, or one left-padded batch through "
                        "model.generate (faster on the CPU) (default: %(default)s)")


def _add_measure_args(p: argparse.ArgumentParser) -> None:
    """Profiles, GPU-busy sampling, scheduling, speculative decoding and the structured-outputs run."""
    p.add_argument("--profile-dir", help="write a jax.profiler trace of generate here")
    p.add_argument("--gpu-busy", action="store_true",
                   help="sample nvidia-smi's utilization.gpu during generate and report its mean")
    p.add_argument("--host-profile", metavar="PATH", help="cProfile generate; write the top functions to PATH")
    p.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=True,
                   help="schedule step N+1 while step N runs (engine default: on)")
    p.add_argument("--speculative-config", type=json.loads, metavar="JSON",
                   help='LLM(speculative_config=...), e.g. \'{"method": "ngram", "num_speculative_tokens": 4}\'')
    p.add_argument("--prompt-period", type=int, default=0,
                   help="prompts repeat a random segment of this many tokens (n-gram drafts find matches)")
    p.add_argument("--structured", action="store_true",
                   help="then run the requests again, each with one of 8 JSON schemas (structured outputs), and "
                        "compare (jaxllm/bench/structured.py)")
    p.add_argument("--tokenizer", help="with --structured: an HF tokenizer folder (default: the default model's)")


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations of arguments that cannot run: an error naming them (argparse's exit)."""
    spec_draft.check_args(p, args)
    if not args.workload and not args.config:
        p.error("give --workload or --config")
    if args.tokenizer and not args.structured:
        p.error("--tokenizer is for the grammars of --structured")
    if args.peer_api != "generate_batch" and args.workload in EMBED_WORKLOADS:
        p.error("--peer-api is for generation workloads (the embedding peer runs the model's forward)")
    if args.lora_adapters and args.peer:
        p.error("--lora-adapters has no peer run")
    if args.fp8_activations and args.quantization != "fp8":
        p.error(f"--fp8-activations {args.fp8_activations} needs --quantization fp8, not {args.quantization}")

def workload_from_args(args) -> Workload:
    named = {**WORKLOADS, **EMBED_WORKLOADS}
    base = named[args.workload] if args.workload else Workload(
        "custom", args.config, 64, (128, 512), (128, 128))
    pick = lambda value, default: default if value is None else value
    return dataclasses.replace(
        base, config=args.config or base.config, num_requests=args.num_requests or base.num_requests,
        prompt_len=tuple(args.prompt_len or base.prompt_len), output_len=tuple(args.output_len or base.output_len),
        temperature=pick(args.temperature, base.temperature), seed=args.seed, prompt_period=args.prompt_period,
        top_p=pick(args.top_p, base.top_p), top_k=pick(args.top_k, base.top_k), min_p=pick(args.min_p, base.min_p),
        per_request_seeds=pick(args.per_request_seeds, base.per_request_seeds))
