"""``jaxllm bench --structured``: the workload's requests again, each constrained by one of 8 JSON schemas
(round robin), after the plain run on the same LLM; reports constrained vs unconstrained throughput and what
grammar compilation adds before the first token.

The weights are random, so the constrained outputs are random walks through each grammar (strings of random
tokens, mostly): ``ignore_eos`` keeps every output at the workload's length, so both runs generate the same
number of tokens. The grammars need a tokenizer: ``--tokenizer`` (an HF tokenizer folder), else the embedded
default model's (SmolLM2, 49152 tokens; ids beyond it are never allowed).
"""

from __future__ import annotations

import statistics
import time

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name", "age"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}, "required": ["tags"]},
    {"type": "object", "$defs": {"pt": {"type": "object", "properties": {"x": {"type": "number"},
                                                                          "y": {"type": "number"}}}},
     "properties": {"a": {"$ref": "#/$defs/pt"}, "b": {"$ref": "#/$defs/pt"}}, "required": ["a", "b"]},
    {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0}, "ok": {"type": "boolean"},
                                      "note": {"type": "string"}}, "required": ["id", "ok", "note"]},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                      "text": {"type": "string"}}, "required": ["color", "text"]},
    {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}, "v": {"type": "number"}},
                                "required": ["k", "v"]}},
    {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"},
                                      "authors": {"type": "array", "items": {"type": "string"}}},
     "required": ["title", "year", "authors"]},
    {"type": "object", "properties": {"outer": {"type": "object", "properties": {
        "inner": {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}},
        "required": ["inner"]}}, "required": ["outer"]},
]


def save_default_tokenizer(folder: str) -> str:
    """The default model's tokenizer (from its GGUF) saved as an HF tokenizer into ``folder``."""
    from jaxllm.default_model import DefaultModelNotInstalledError, default_gguf_path
    from jaxllm.tokenizer import load_tokenizer

    try:
        path = default_gguf_path()
    except DefaultModelNotInstalledError as e:
        raise SystemExit(f"--structured needs a tokenizer: pass --tokenizer DIR (an HF tokenizer folder, e.g. "
                         f"one written by jaxllm.bench.structured.save_default_tokenizer elsewhere) or {e}") from e
    load_tokenizer(path, gguf_source=True).save_pretrained(folder)
    return folder


def wait_for_grammar_start_up(llm) -> None:
    """Wait for llguidance's tokenizer, built on a background thread from the engine's start-up, so that the
    plain run does not share the host with it (the wait counts as start-up)."""
    grammars = llm.llm_engine._grammars
    if grammars is not None:
        grammars._llg_tokenizer("bench")


def _ttft(outs) -> float:
    """Median seconds from a request's arrival to its first token."""
    return statistics.median(o.metrics.first_token_time - o.metrics.arrival_time for o in outs)


def run_structured(llm, prompts, output_lens, temperature: float, plain_outs, plain_s: float) -> dict:
    """Generate ``prompts`` (first token shifted: no prefix-cache hit on the plain run) with a JSON schema
    each; compare with the plain run's outputs ``plain_outs`` that took ``plain_s`` seconds."""
    from jaxllm import SamplingParams, StructuredOutputsParams

    vocab = llm.model_config.vocab_size
    shifted = [[(p[0] + 1) % vocab, *p[1:]] for p in prompts]
    params = [SamplingParams(temperature=temperature, max_tokens=n, ignore_eos=True, detokenize=False,
                             structured_outputs=StructuredOutputsParams(json=SCHEMAS[i % len(SCHEMAS)]))
              for i, n in enumerate(output_lens)]
    from jaxllm.structured_outputs.step import HOST_SECONDS

    engine = llm.llm_engine
    runner = engine.runner
    compile_s, steps, wait = runner.compile_seconds, runner.num_steps, runner.device_wait_seconds
    host0 = dict(HOST_SECONDS)
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in shifted], params, use_tqdm=False)
    wall = time.perf_counter() - t0
    compile_s = runner.compile_seconds - compile_s  # programs compiled (or waited for) in generate
    steps, wait = runner.num_steps - steps, runner.device_wait_seconds - wait
    phases = {f"host_ms_per_step_{k}": 1e3 * (v - host0.get(k, 0.0)) / max(steps, 1)
              for k, v in sorted(HOST_SECONDS.items())}
    grammars = engine._grammars
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    plain_tokens = sum(len(o.outputs[0].token_ids) for o in plain_outs)
    return {
        "num_schemas": len(SCHEMAS), "generate_s": wall, "output_tokens": tokens, "output_tok_s": tokens / wall,
        "plain_output_tok_s": plain_tokens / plain_s, "ratio_vs_plain": (tokens / wall) / (plain_tokens / plain_s),
        "ttft_median_s": _ttft(outs), "plain_ttft_median_s": _ttft(plain_outs),
        "grammar_tokenizer_s": grammars.tokenizer_seconds, "grammar_compile_s_total": grammars.compile_seconds,
        "grammar_compile_ms_per_schema": 1e3 * grammars.compile_seconds / max(grammars.num_compiled, 1),
        "grammar_validate_s_total": grammars.validate_seconds, "sampler_compile_s_in_generate": compile_s,
        "steps": steps, "ms_per_step": 1e3 * wall / max(steps, 1),
        "host_ms_per_step": 1e3 * (wall - wait) / max(steps, 1),
        "num_aborted": sum(o.outputs[0].finish_reason == "abort" for o in outs), **phases,
    }


# host work per step (jaxllm.structured_outputs.step.HOST_SECONDS): tokens consumed and masks filled (on the
# grammar thread, beside the scheduler's loop), what the loop then waited for them; of the constrained steps:
# the forward's launch, fetching and applying the previous step (its device wait included), the sampler's launch
PHASES = ("accept", "mask", "wait", "forward_launch", "resolve", "sampler_launch")


def table_rows(s: dict) -> list[tuple[str, str]]:
    return [
        ("structured output tok/s (vs plain)",
         f"{s['output_tok_s']:,.0f} ({100 * s['ratio_vs_plain']:.1f}% of {s['plain_output_tok_s']:,.0f})"),
        ("structured TTFT median s (plain)", f"{s['ttft_median_s']:.2f} ({s['plain_ttft_median_s']:.2f})"),
        ("grammar: tokenizer s / compile ms per schema",
         f"{s['grammar_tokenizer_s']:.2f} / {s['grammar_compile_ms_per_schema']:.1f}"),
        ("structured: programs compiled in generate s", f"{s.get('sampler_compile_s_in_generate', 0):.2f}"),
        ("structured: steps / ms per step / host ms per step",
         f"{s.get('steps', 0)} / {s.get('ms_per_step', 0):.2f} / {s.get('host_ms_per_step', 0):.2f}"),
        ("structured host ms per step: " + " / ".join(PHASES), " / ".join(
            f"{s.get('host_ms_per_step_' + k, 0):.2f}" for k in PHASES)),
    ]
