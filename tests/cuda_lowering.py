"""Host-driven control flow in the step programs, checked on the CPU.

XLA's GPU runtime runs a ``while`` (lax.while_loop / fori_loop / scan, jnp.searchsorted's default method) and a
``case`` / ``if`` (lax.cond / lax.switch) from the host: it copies the predicate back and launches the body's
kernels iteration by iteration, a host sync and many tiny launches per step. The step programs must have none
outside the Pallas / Mosaic kernels (those loops are compiled into the kernel, an opaque custom call here).

``as_if_gpu`` makes the kernel dispatchers believe they run on an sm_90 GPU, ``step_programs`` lowers a
runner's step programs for CUDA (``lowering_platforms=("cuda",)``: nothing compiles, no GPU needed), and
``host_control_flow`` lists every while / case / if of a lowered program with the source line it came from.
scripts/step_control_flow.py prints the report for a tiny model of each family.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys

import jax
import jax.numpy as jnp

CONTROL_FLOW = ("stablehlo.while", "stablehlo.case", "stablehlo.if")
_FRAME = re.compile(r'"([^"]+\.py)":(\d+)')
CUDA = ("cuda",)
_DISPATCHERS = ("jaxllm.ops.grouped_matmul.dispatch", "jaxllm.ops.paged_attention.dispatch",
                "jaxllm.ops.quant_matmul.dispatch", "jaxllm.ops.sampling", "jaxllm.models.quant",
                "jaxllm.models.sampler_filters")
# one tiny checkpoint per family we serve (tests/hf_models.py keywords): head_dim 64, so that with a bf16 model
# the Hopper attention choices (the Mosaic long-prefill programs) apply
HEADS = {"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
         "max_position_embeddings": 2048, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
FAMILIES = {
    "LlamaForCausalLM": HEADS,
    "Qwen3ForCausalLM": HEADS,
    "Gemma2ForCausalLM": {**HEADS, "sliding_window": 16},
    "Gemma3ForCausalLM": {**HEADS, "sliding_window": 16},
    "Phi3ForCausalLM": {k: v for k, v in HEADS.items() if k != "head_dim"},
    "Olmo2ForCausalLM": {k: v for k, v in HEADS.items() if k != "head_dim"},
    "MixtralForCausalLM": {**HEADS, "num_local_experts": 4, "num_experts_per_tok": 2},
    "Qwen3MoeForCausalLM": {**HEADS, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64},
}
ENGINE = {"dtype": "bfloat16", "skip_tokenizer_init": True, "max_num_seqs": 4, "max_num_batched_tokens": 2048,
          "enforce_eager": True, "max_model_len": 2048}
_OURS = re.compile(r"\b(jaxllm|ops|tests|scripts)/[^\"]*$")


@contextlib.contextmanager
def as_if_gpu(cc: tuple[int, int] = (9, 0)):
    """While inside, ``gpu_compute_capability()`` returns ``cc`` in every module that imported it (the
    dispatchers bind the function by name at import), so programs lowered for CUDA take the GPU kernels; the
    exact-sampling kernel's compile probe (``kernel_compiles``, which compiles for real) answers True, as on a
    GPU where the kernel compiles."""
    for name in _DISPATCHERS:  # loaded before patching, so that each one's binding is patched
        importlib.import_module(name)

    def fake():
        return cc

    patched = []
    for name, module in list(sys.modules.items()):
        original = vars(module).get("gpu_compute_capability") if name.split(".")[0] in ("jaxllm", "ops") else None
        if original is not None:
            patched.append((module, original))
            module.gpu_compute_capability = fake
    sampling = sys.modules["jaxllm.ops.sampling"]
    patched.append((sampling, sampling.kernel_compiles))
    sampling.kernel_compiles = lambda v: True
    try:
        yield
    finally:
        for module, original in patched:
            setattr(module, original.__name__, original)


def _user_frame(location: str) -> str | None:
    """The innermost source line of our code (jaxllm/, ops/, tests/, scripts/) in an MLIR location, else None."""
    for path, line in _FRAME.findall(location):
        ours = _OURS.search(path)
        if ours and "site-packages" not in path:
            return f"{ours.group(0)}:{line}"
    return None


def host_control_flow(lowered) -> list[str]:
    """Every while / case / if of a lowered program (jax ``Lowered``), as ``"stablehlo.while at file.py:N
    (location)"``. An op inside a private function (a nested jit, e.g. jnp.searchsorted) carries no source line
    itself: the line of the first call site that has one is reported."""
    module = lowered.compiler_ir("stablehlo")
    found, calls = [], {}  # calls: callee -> [(caller, location)]

    def walk(op, func):
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    name = inner.operation.name
                    if name in CONTROL_FLOW:
                        found.append((name, func, str(inner.location)))
                    elif name == "func.call":
                        callee = str(inner.attributes["callee"]).lstrip("@")
                        calls.setdefault(callee, []).append((func, str(inner.location)))
                    walk(inner.operation, func)

    for func in module.body.operations:
        walk(func.operation, str(func.attributes["sym_name"]).strip('"'))

    def source(func: str, location: str, seen=()) -> str:
        frame = _user_frame(location)
        if frame is not None or func in seen:
            return frame or "?"
        for caller, loc in calls.get(func, []):
            frame = source(caller, loc, (*seen, func))
            if frame != "?":
                return f"{frame} (in {func})"
        return "?"

    return [f"{name} at {source(func, loc)}  [{loc[:160]}]" for name, func, loc in found]


def _sample_configs(runner):
    """The sampler variants to check: the start-up ones, and one with every optional part."""
    from jaxllm.runner.sampler_config import STARTUP_CONFIGS, SamplerConfig

    full = SamplerConfig(greedy_only=False, num_logprobs=20, bias_width=8, allowed_width=8, banned_width=8,
                         penalty_len=64, grammar_words=-(-runner.cfg.vocab_size // 32), random=True, min_p=True,
                         top_k=True, top_p=True)
    return [*STARTUP_CONFIGS, full]


def step_programs(runner) -> dict[str, object]:
    """{name: program lowered for CUDA} of a ``ModelRunner`` / ``PoolingModelRunner``: the forward of the
    smallest and the largest bucket (plain, with hidden states, long-prefill when the attention policy splits
    prefills), the sampler variants, the prompt-logprobs program and the KV swap copies. Call
    it inside ``as_if_gpu`` with a runner built there (its kernel policy reads the device at construction)."""
    from jaxllm.runner.kv_swap import _gather, _scatter
    from jaxllm.runner.programs import ForwardKey, SampleKey
    from jaxllm.runner.prompt_logprobs import CHUNK, TOP_K

    buckets = runner.ladder.buckets
    buckets = sorted({buckets[0], buckets[-1]}, key=lambda b: b.num_tokens)
    keys = [ForwardKey(b, return_hidden=h) for b in buckets for h in (False, True)]
    if runner.kernels.prefill_split is not None:
        keys += [ForwardKey(b, long_prefill=True) for b in buckets]
    pooling = not any(isinstance(k, SampleKey) for k in runner.startup_keys())  # PoolingModelRunner
    if not pooling:
        rows = runner._sample_rows()
        keys += [SampleKey(s, c) for s in sorted({rows[0], rows[-1]}) for c in _sample_configs(runner)]
        if runner.spec.sampled_drafts:  # verifying a draft model's sampled drafts
            keys += [SampleKey(s, c, sampled_drafts=True) for s in sorted({rows[0], rows[-1]})
                     for c in _sample_configs(runner) if c.random]
    out = {str(key): runner.lower(key, CUDA) for key in keys}
    if getattr(runner, "draft", None) is not None:  # the draft model's sampling program
        out.update(_draft_sample_programs(runner.draft))
    if not pooling:
        hidden = jax.ShapeDtypeStruct((CHUNK, runner.cfg.hidden_size), runner.dtype)
        targets = jax.ShapeDtypeStruct((CHUNK,), jnp.int32)
        out["prompt_logprobs"] = runner._prompt_lp.trace(runner.params, hidden, targets, k=TOP_K).lower(
            lowering_platforms=CUDA)
    idx = jax.ShapeDtypeStruct((4,), jnp.int32)
    caches = runner.kv_caches
    out["kv_swap_out"] = jax.jit(_gather).trace(caches, idx).lower(lowering_platforms=CUDA)
    values = jax.eval_shape(_gather, caches, idx)
    out["kv_swap_in"] = jax.jit(_scatter).trace(caches, idx, values).lower(lowering_platforms=CUDA)
    return out


def _draft_sample_programs(draft) -> dict[str, object]:
    """The draft's sampling program (``DraftSampleKey``) of its smallest and largest sequence bucket, for CUDA."""
    from jaxllm.spec_decode.draft_sampling import draft_row_arrays

    out = {}
    for s in sorted({draft.ladder.buckets[0].num_seqs, draft.ladder.buckets[-1].num_seqs}):
        logits = jax.ShapeDtypeStruct((s, draft.cfg.vocab_size), jnp.float32)
        rows = draft_row_arrays([], 0, s, draft.cfg.vocab_size)
        for filters in (False, True):
            out[f"draft_sample_{s}_{filters}"] = draft._sample.trace(
                logits, rows, out_rows=draft._max_seqs, q_rows=draft._q_rows, top_k_top_p=filters,
            ).lower(lowering_platforms=CUDA)
    return out


def family_programs(arch: str, path: str, cc: tuple[int, int] = (9, 0), **engine) -> dict[str, object]:
    """Save a tiny ``arch`` checkpoint (``FAMILIES``) at ``path``, build its runner as on a GPU of compute
    capability ``cc`` (``engine``: more LLM keywords) and lower its step programs for CUDA (``step_programs``)."""
    from hf_models import save_tiny_model

    from jaxllm import LLM

    save_tiny_model(path, arch, **FAMILIES[arch])
    with as_if_gpu(cc):
        return step_programs(LLM(path, **{**ENGINE, **engine}).llm_engine.runner)


def encoder_programs(path: str, cc: tuple[int, int] = (9, 0)) -> dict[str, object]:
    """A tiny BertModel saved at ``path``: its smallest and largest length buckets lowered for CUDA as on a GPU
    of compute capability ``cc``. With XLA's attention: the cuDNN kernel a 16-bit encoder takes on a GPU (one custom call) needs cuDNN
    to lower."""
    from pooling.pooling_models import save_encoder

    from jaxllm import LLM

    save_encoder(path, "BertModel")
    with as_if_gpu(cc):
        encoder = LLM(path, runner="pooling", dtype="bfloat16", enforce_eager=True, max_num_seqs=4,
                      max_num_batched_tokens=256)._encoder
        lengths = sorted({encoder.lengths[0], encoder.lengths[-1]})
        return {f"encode(len={n}, token_rows={t})": encoder._lower(n, t, CUDA) for n in lengths
                for t in (False, True)}


def report(programs: dict[str, object]) -> dict[str, list[str]]:
    """{program name: its host control flow} for the programs that have any."""
    found = {name: host_control_flow(lowered) for name, lowered in programs.items()}
    return {name: ops for name, ops in found.items() if ops}
