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
import gc
import json
import logging
import os
import sys
import tempfile
import time

from jaxllm.bench import kv_offload, spec_draft
from jaxllm.bench.card_roofline import card_fields, with_card_fractions
from jaxllm.bench.embed import EMBED_WORKLOADS
from jaxllm.bench.monitor import GpuBusySampler, host_profile
from jaxllm.bench.peer_process import run_peer_process
from jaxllm.bench.presets import PRESETS, preset_args
from jaxllm.bench.workloads import WORKLOADS, Workload
from jaxllm.engine_args import ATTENTION_BACKENDS, QUANT_MATMUL_IMPLS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jaxllm bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), help="a named configuration of benchmarks/README.md")
    p.add_argument("--summarize", metavar="DIR", help="only rebuild DIR/README.md from the results in DIR")
    p.add_argument("--same-machine", action="store_true",
                   help="with --summarize: DIR is one device call's output; record each run's baseline ratio")
    p.add_argument("--workload", choices=sorted(WORKLOADS) + sorted(EMBED_WORKLOADS),
                   help="a named workload of BENCHMARKS.md (E-*: embedding throughput, jaxllm.bench.embed)")
    p.add_argument("--config", help="custom workload: an HF config.json of the architecture")
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
    p.add_argument("--peer", choices=["hf"], help="also run HF transformers' generate_batch on the same requests")
    p.add_argument("--peer-max-requests", type=int, help="run the peer on the first N requests only")
    p.add_argument("--peer-device", default="cuda", help="torch device of the peer (default: %(default)s)")
    p.add_argument("--peer-threads", type=int,
                   help="the peer's torch.set_num_threads (default: torch's; on a busy CPU fewer may be faster)")
    p.add_argument("--peer-api", default="generate_batch", choices=["generate_batch", "generate"],
                   help="the peer's transformers API: continuous batching, or one left-padded batch through "
                        "model.generate (faster on the CPU) (default: %(default)s)")
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
    kv_offload.add_args(p)
    spec_draft.add_args(p)
    p.add_argument("--output", help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.preset:  # the preset's arguments first, so the ones given override them
        args = p.parse_args(preset_args(args.preset) + list(sys.argv[1:] if argv is None else argv))
    if args.summarize:
        return args
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
    return args


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


def run_jaxllm(w: Workload, args, model_dir: str, prompts, output_lens) -> dict:
    import jax

    from jaxllm import LLM, SamplingParams

    max_model_len = w.prompt_len[1] + w.output_len[1] + (args.shared_prefix[0] if args.shared_prefix else 0)
    tokenizer = None
    if args.structured:
        from jaxllm.bench.structured import save_default_tokenizer

        tokenizer = args.tokenizer or save_default_tokenizer(os.path.join(model_dir, "tokenizer"))
    lora = {}
    if args.lora_adapters:
        lora = {"enable_lora": True, "max_loras": args.lora_adapters, "max_lora_rank": args.lora_rank}
    speculative = spec_draft.speculative_config(args, model_dir)
    t0 = time.perf_counter()
    llm = LLM(model_dir, load_format="dummy", skip_tokenizer_init=tokenizer is None, tokenizer=tokenizer,
              dtype=args.dtype,
              max_model_len=max_model_len, max_num_seqs=args.max_num_seqs,
              max_num_batched_tokens=args.max_num_batched_tokens, block_size=args.block_size,
              gpu_memory_utilization=args.gpu_memory_utilization, tensor_parallel_size=args.tensor_parallel_size,
              data_parallel_size=args.data_parallel_size, enforce_eager=args.enforce_eager, seed=args.seed, quantization=args.quantization,
              async_scheduling=args.async_scheduling, kv_cache_dtype=args.kv_cache_dtype,
              fp8_activations=args.fp8_activations, attention_backend=args.attention_backend,
              quant_matmul_impl=args.quant_matmul_impl, enable_expert_parallel=args.enable_expert_parallel,
              moe_matmul_impl=args.moe_matmul_impl, speculative_config=speculative, **lora,
              **kv_offload.llm_kwargs(args))
    if args.structured:  # its start-up work on a background thread, which the plain run must not share
        from jaxllm.bench.structured import wait_for_grammar_start_up

        wait_for_grammar_start_up(llm)
    startup = time.perf_counter() - t0
    runner = llm.llm_engine.runner
    runner.programs.wait_background()  # background_compile (the CPU's default): steady-state steps are timed
    all_compiled = time.perf_counter() - t0
    logging.getLogger("jaxllm").info("ready in %.1f s (every program compiled at %.1f s); generate starts", startup,
                                     all_compiled)
    params = [SamplingParams(**w.sampling_kwargs(i), max_tokens=n, ignore_eos=True, detokenize=False)
              for i, n in enumerate(output_lens)]
    loras = _lora_requests(args, llm, model_dir, len(prompts))
    if args.profile_dir:
        jax.profiler.start_trace(args.profile_dir)
    sampler = GpuBusySampler() if args.gpu_busy else None
    if sampler:
        sampler.start()
    steps0, wait0 = runner.num_steps, runner.device_wait_seconds
    t1 = time.perf_counter()
    with host_profile(args.host_profile):
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False, lora_request=loras)
    wall = time.perf_counter() - t1
    gpu_busy = sampler.stop() if sampler else None
    if args.profile_dir:
        jax.profiler.stop_trace()
    out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    prompt_tokens = sum(len(p) for p in prompts)
    steps = runner.num_steps - steps0
    wait = runner.device_wait_seconds - wait0
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    cfg = llm.model_config
    kv_bytes = sum(a.nbytes for a in runner.kv_caches)
    structured = None
    if args.structured:
        from jaxllm.bench.structured import run_structured

        structured = run_structured(llm, prompts, output_lens, w.temperature, outs, wall)
    return {
        "structured": structured,
        "startup_s": startup, "all_compiled_s": all_compiled, "weights_init_s": llm.load_seconds, "compile_s": runner.compile_seconds,
        "first_run_s": runner.first_run_seconds,
        "num_compilations": runner.num_compilations, "generate_s": wall,
        "output_tokens": out_tokens, "prompt_tokens": prompt_tokens,
        "output_tok_s": out_tokens / wall, "total_tok_s": (out_tokens + prompt_tokens) / wall,
        "requests_s": len(prompts) / wall, "steps": steps, "ms_per_step": 1e3 * wall / max(steps, 1),
        "host_ms_per_step": 1e3 * (wall - wait) / max(steps, 1),
        "peak_device_bytes": stats.get("peak_bytes_in_use"), "kv_cache_bytes": kv_bytes,
        "kv_cache_blocks": runner.num_blocks, "kv_cache_dtype": str(runner.kv_caches[0].dtype),
        "activation_reserve_bytes": runner.cache_plan.activation_reserve_bytes,
        "measured_activation_bytes": runner.cache_plan.measured_activation_bytes, "block_size": args.block_size,
        "num_preemptions": llm.llm_engine.stats.num_preemptions, **kv_offload.stats(llm),
        "async_scheduling": llm.llm_engine.async_scheduling, "gpu_busy": gpu_busy,
        "quantization": args.quantization, "lora_adapters": args.lora_adapters,
        "lora_rank": args.lora_rank if args.lora_adapters else None,
        "lora_slot_writes": runner.lora.num_slot_writes if runner.lora is not None else None,
        "speculative_config": speculative,
        "spec_decode_acceptance_rate": llm.llm_engine.stats.spec_decode_acceptance_rate,
        "spec_decode_num_accepted_tokens": llm.llm_engine.stats.spec_decode_num_accepted_tokens,
        "fp8_activations": llm.model_config.fp8_activations if args.quantization == "fp8" else None,  # resolved
        "device": str(dev.device_kind), "dtype": args.dtype, "jax": jax.__version__, "params": cfg.num_params(),
    }


def _lora_requests(args, llm, model_dir: str, num_prompts: int):
    """With ``--lora-adapters N``: N random adapters written under ``model_dir`` and read into host memory (before
    the timed generate), request i using adapter i % N; else None."""
    if not args.lora_adapters:
        return None
    from jaxllm.bench.lora_adapters import write_random_adapters

    adapters = write_random_adapters(os.path.join(model_dir, "lora"), llm.model_config, args.lora_adapters,
                                     args.lora_rank, seed=args.seed)
    for a in adapters:
        llm.llm_engine.runner.check_lora(a)
    return [adapters[i % len(adapters)] for i in range(num_prompts)]


def bench_requests(args):
    """(workload, ModelConfig, HF config dict, prompt ids, output lengths) of a generation run: deterministic in
    the arguments, so a saved result's command rebuilds them."""
    from jaxllm.bench.roofline import dummy_int4_quantization_config
    from jaxllm.config import ModelConfig

    w = workload_from_args(args)
    hf = w.hf_config()
    if args.quantization in ("awq", "gptq"):  # dummy 4-bit weights need the checkpoint format in config.json
        hf = {**hf, "quantization_config": dummy_int4_quantization_config(args.quantization)}
    cfg = ModelConfig.from_hf(hf, dtype="bfloat16")
    prompts, output_lens = w.requests(cfg.vocab_size)
    prompts = kv_offload.with_shared_prefixes(prompts, args, cfg.vocab_size, args.seed)
    return w, cfg, hf, prompts, output_lens


def bench_roofline(args, fp8_activations: str | None, peaks=None, requests=None) -> dict:
    """The roofline of the run ``args`` describes, with ``peaks`` (a card_roofline.CardPeaks; default the H200
    reference). ``requests``: (cfg, prompts, output lengths) when already built."""
    from jaxllm.bench.roofline import run_roofline

    if requests is None:
        _, cfg, _, prompts, output_lens = bench_requests(args)
    else:
        cfg, prompts, output_lens = requests
    card = {} if peaks is None else {"peak_flops": peaks.matmul_flops, "bandwidth": peaks.copy_bytes_per_s}
    # data-parallel replicas counted as ideal, like tensor parallelism: GPUs and concurrent sequences add up
    return run_roofline(cfg, [len(p) for p in prompts], output_lens,
                        max_num_seqs=args.max_num_seqs * args.data_parallel_size,
                        quantization=args.quantization, kv_cache_dtype=args.kv_cache_dtype,
                        tensor_parallel_size=args.tensor_parallel_size * args.data_parallel_size,
                        fp8_activations=fp8_activations, **card)


def run_peer(w: Workload, args, model_dir: str) -> dict:
    """transformers' generate_batch (or generate) in a subprocess; returns its JSON."""
    return run_peer_process("jaxllm.bench.peer_hf", w, args, model_dir, "--api", args.peer_api)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.summarize:
        from jaxllm.bench.report import write_summary

        text = write_summary(args.summarize, same_machine=args.same_machine)
        print(text)
        return {"summary": text}
    # progress on stderr (weights, compilation), so a run cut short by a time limit shows where it was
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("jaxllm").addHandler(handler)
    logging.getLogger("jaxllm").setLevel(logging.INFO)
    w = workload_from_args(args)
    if args.workload in EMBED_WORKLOADS:
        from jaxllm.bench import embed

        return embed.main(args, w, argv)
    w, cfg, hf, prompts, output_lens = bench_requests(args)
    with tempfile.TemporaryDirectory() as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            json.dump(hf, f)
        peer = run_peer(w, args, model_dir) if args.peer else None
        ours = run_jaxllm(w, args, model_dir, prompts, output_lens)
    gc.collect()
    roof = bench_roofline(args, ours["fp8_activations"], requests=(cfg, prompts, output_lens))
    result = {"workload": w.__dict__, "preset": args.preset,
              "command": "jaxllm bench " + " ".join(argv or sys.argv[1:]), "jaxllm": ours, "roofline": roof,
              "pct_roofline_output": 100 * ours["output_tok_s"] / roof["output_tok_s"],
              "pct_roofline_total": 100 * ours["total_tok_s"] / roof["total_tok_s"]}
    card = card_fields(ours["device"], lambda peaks: bench_roofline(args, ours["fp8_activations"], peaks,
                                                                    (cfg, prompts, output_lens)))
    result = with_card_fractions({**result, **card})
    if peer:
        result["peer_hf"] = peer
        result["speedup_vs_peer_output"] = ours["output_tok_s"] / peer["output_tok_s"]
    print_table(result)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result


def print_table(r: dict) -> None:
    o, roof = r["jaxllm"], r["roofline"]
    rows = [
        ("workload", r["workload"]["name"]),
        ("start-up s (weights init / compile / first runs)",
         f"{o['startup_s']:.1f} ({o['weights_init_s']:.1f} / {o['compile_s']:.1f} / {o['first_run_s']:.1f})"),
        ("generate s", f"{o['generate_s']:.2f}"),
        ("output tok/s", f"{o['output_tok_s']:,.0f}"),
        ("total tok/s", f"{o['total_tok_s']:,.0f}"),
        ("requests/s", f"{o['requests_s']:.2f}"),
        ("steps / ms per step / host ms per step", f"{o['steps']} / {o['ms_per_step']:.2f} / {o['host_ms_per_step']:.2f}"),
        ("GPU busy % (nvidia-smi)", "-" if not o.get("gpu_busy") else f"{o['gpu_busy']['mean_pct']:.1f}"),
        ("peak device GiB", f"{(o['peak_device_bytes'] or 0) / 2**30:.1f}"),
        ("KV cache GiB / blocks", f"{o['kv_cache_bytes'] / 2**30:.1f} / {o['kv_cache_blocks']}"),
        ("roofline output / total tok/s", f"{roof['output_tok_s']:,.0f} / {roof['total_tok_s']:,.0f}"),
        ("% of roofline (output / total)", f"{r['pct_roofline_output']:.1f}% / {r['pct_roofline_total']:.1f}%"),
    ]
    if "card_roofline" in r:
        rows.append((f"% of the {r['card_roofline']['card']}'s own roofline (output / total)",
                     f"{r['pct_card_roofline_output']:.1f}% / {r['pct_card_roofline_total']:.1f}%"))
    if o.get("structured"):
        from jaxllm.bench.structured import table_rows

        rows += table_rows(o["structured"])
    if "peer_hf" in r:
        rows.append(("HF peer output tok/s (ratio)", (f"{r['peer_hf']['output_tok_s']:,.0f} "
                                                    f"({r['speedup_vs_peer_output']:.1f}x)")))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
