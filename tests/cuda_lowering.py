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
import re
import sys

import jax
import jax.numpy as jnp

CONTROL_FLOW = ("stablehlo.while", "stablehlo.case", "stablehlo.if")
_FRAME = re.compile(r'"([^"]+\.py)":(\d+)')
CUDA = ("cuda",)
_OURS = re.compile(r"\b(jaxllm|ops|tests|scripts)/[^\"]*$")


@contextlib.contextmanager
def as_if_gpu(cc: tuple[int, int] = (9, 0)):
    """While inside, ``gpu_compute_capability()`` returns ``cc`` in every module that imported it (the
    dispatchers bind the function by name at import), so programs lowered for CUDA take the GPU kernels."""
    import jaxllm.models.quant  # noqa: F401 - every dispatcher module loaded before patching
    import jaxllm.models.sampler_filters  # noqa: F401
    import jaxllm.ops.grouped_matmul.dispatch  # noqa: F401
    import jaxllm.ops.paged_attention.dispatch  # noqa: F401
    import jaxllm.ops.quant_matmul.dispatch  # noqa: F401
    import jaxllm.ops.sampling  # noqa: F401

    def fake():
        return cc

    patched = []
    for name, module in list(sys.modules.items()):
        original = vars(module).get("gpu_compute_capability") if name.split(".")[0] in ("jaxllm", "ops") else None
        if original is not None:
            patched.append((module, original))
            module.gpu_compute_capability = fake
    # the exact-sampling kernel's probe compiles it for real: on the GPU it does, so the sampler takes it
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
                         top_k_top_p=True)
    return [*STARTUP_CONFIGS, full]


def step_programs(runner, max_buckets: int = 2) -> dict[str, object]:
    """{name: program lowered for CUDA} of a ``ModelRunner`` / ``PoolingModelRunner``: the forward of the
    smallest and largest of ``max_buckets`` buckets (plain, with hidden states, long-prefill when the attention
    policy splits prefills), the sampler variants, the prompt-logprobs program and the KV swap copies. Call
    it inside ``as_if_gpu`` with a runner built there (its kernel policy reads the device at construction)."""
    from jaxllm.runner.kv_swap import _gather, _scatter
    from jaxllm.runner.programs import ForwardKey, SampleKey
    from jaxllm.runner.prompt_logprobs import CHUNK, TOP_K

    buckets = runner.ladder.buckets
    buckets = sorted({buckets[0], buckets[-1]}, key=lambda b: b.num_tokens)[:max_buckets]
    keys = [ForwardKey(b, return_hidden=h) for b in buckets for h in (False, True)]
    if runner.kernels.prefill_split is not None:
        keys += [ForwardKey(b, long_prefill=True) for b in buckets]
    pooling = not any(isinstance(k, SampleKey) for k in runner.startup_keys())  # PoolingModelRunner
    if not pooling:
        rows = runner._sample_rows()
        keys += [SampleKey(s, c) for s in sorted({rows[0], rows[-1]}) for c in _sample_configs(runner)]
    out = {str(key): runner.lower(key, CUDA) for key in keys}
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


def encoder_programs(encoder) -> dict[str, object]:
    """{name: program lowered for CUDA} of an ``EncoderRunner``: its smallest and largest length buckets. With
    XLA's attention: the cuDNN kernel a 16-bit encoder takes on a GPU (one custom call) needs cuDNN to lower."""
    lengths = sorted({encoder.lengths[0], encoder.lengths[-1]})
    return {f"encode(len={n}, token_rows={t})": encoder._lower(n, t, CUDA) for n in lengths for t in (False, True)}


def report(programs: dict[str, object]) -> dict[str, list[str]]:
    """{program name: its host control flow} for the programs that have any."""
    found = {name: host_control_flow(lowered) for name, lowered in programs.items()}
    return {name: ops for name, ops in found.items() if ops}
