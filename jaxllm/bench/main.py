"""``jaxllm bench`` / scripts/bench_throughput.py: run one throughput workload (or summarize results).

Builds the workload's random-weight model, times ``LLM`` start-up apart from ``generate``, optionally runs the
transformers peer on the same requests first, and reports tokens/s against the roofline (roofline.py) as a
table and JSON. The command line and its help are in command_line.py.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tempfile
import time

from jaxllm.bench import kv_offload, spec_draft
from jaxllm.bench.card_roofline import card_fields, with_card_fractions
from jaxllm.bench.command_line import parse_args, workload_from_args
from jaxllm.bench.embed import EMBED_WORKLOADS
from jaxllm.bench.monitor import GpuBusySampler, host_profile
from jaxllm.bench.peer_process import run_peer_process
from jaxllm.bench.workloads import Workload

# parse_args and workload_from_args (command_line.py) keep their import path here.
__all__ = ["bench_requests", "bench_roofline", "main", "parse_args", "print_table", "run_jaxllm", "run_peer",
           "workload_from_args"]


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
              background_compile=None if args.background_compile is None else args.background_compile != "off",
              **kv_offload.llm_kwargs(args))
    if args.structured:  # its start-up work on a background thread, which the plain run must not share
        from jaxllm.bench.structured import wait_for_grammar_start_up

        wait_for_grammar_start_up(llm)
    startup = time.perf_counter() - t0
    runner = llm.llm_engine.runner
    all_compiled = None  # overlap: generate starts while programs compile
    if args.background_compile != "overlap":  # background_compile: steady-state steps are timed
        runner.programs.wait_background()
        all_compiled = time.perf_counter() - t0
    if args.echo_weights:  # acceptance near 1 at the same cost (spec_draft.py); not part of start-up
        from jaxllm.bench.echo_weights import apply_echo

        apply_echo(llm)
    logging.getLogger("jaxllm").info("ready in %.1f s (every program compiled at %s s); generate starts", startup,
                                     "-" if all_compiled is None else f"{all_compiled:.1f}")
    params = [SamplingParams(**w.sampling_kwargs(i), max_tokens=n, ignore_eos=True, detokenize=False)
              for i, n in enumerate(output_lens)]
    loras = _lora_requests(args, llm, model_dir, len(prompts))
    if args.profile_dir:
        jax.profiler.start_trace(args.profile_dir)
    sampler = GpuBusySampler() if args.gpu_busy else None
    if sampler:
        sampler.start()
    steps0, wait0, spec0 = runner.num_steps, runner.device_wait_seconds, spec_draft.counters(llm)
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
        "first_run_s": runner.first_run_seconds, "background_compile": args.background_compile,
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
        "echo_weights": args.echo_weights,
        **spec_draft.spec_stats(llm, spec0, speculative, prompts,
                                [o.outputs[0].token_ids for o in outs] if args.echo_weights else None),
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
    if args.workload in EMBED_WORKLOADS:
        from jaxllm.bench import embed

        return embed.main(args, workload_from_args(args), argv)
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
