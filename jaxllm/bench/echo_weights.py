"""Echo weights (``jaxllm bench --echo-weights``): a random-weight model that repeats its last input token under
greedy decoding, at the cost of the random model it replaces. Speculative decoding's drafts (n-gram lookups
of the repeated token, or a draft model echoing too) are then accepted nearly always: the runs measure the
upper bound of speculation's speed-up at the model's real shapes. Acceptance with trained weights is measured
on the CPU (scripts/spec_decode_acceptance.py); docs/spec_decode.md has both.

Only values change, never a shape, dtype, sharding, FLOP or byte of a step:

- every residual branch's output projection (attention ``o_proj`` / ``o_bias``, MLP and experts' ``down`` /
  ``down_bias``) is multiplied by ``BRANCH_SCALE`` = 2^-14: the branches add ~5% of the token's own embedding
  to the residual stream (8B dims, 64 branches), so the final hidden state is that embedding. A power of two
  keeps every bf16 mantissa bit (only exponents move), so the matmuls see data of the same bit patterns;
- the embedding rows are scaled to one common norm (their mean), so the token's own row has the largest dot
  product with it, and the final norm's weight is one (its bias zero): the argmax of
  ``norm(e_t) @ embed.T`` is t;
- an untied ``lm_head`` becomes the embedding matrix (tied models already use it).

The transform runs leaf by leaf and donates each old array, so the device needs room for one changed
parameter more, not a second copy of the model (a device-filling KV cache leaves ~10% of the memory).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.runner.weight_updates import param_name

BRANCH_SCALE = 2.0 ** -14
BRANCH_OUTPUTS = ("o_proj", "o_bias", "down", "down_bias")  # leaves whose output is added to the residual stream


def check_supported(cfg) -> None:
    """ValueError naming what ``cfg`` (a ModelConfig) has that the echo transform does not handle: quantized
    linear layers (other leaves and layouts) and norms around the branches' outputs (Gemma 2/3's sandwich,
    OLMo 2's post norms undo the branch scale)."""
    if cfg.quantization is not None:
        raise ValueError(f"--echo-weights: quantization={cfg.quantization!r} is not supported (bf16 weights only)")
    if cfg.norm_placement != "pre":
        raise ValueError(f"--echo-weights: norm_placement={cfg.norm_placement!r} is not supported (pre-norm "
                         "models: a norm after a branch undoes its scale)")


def echo_leaves(named: list[tuple[str, jax.Array]]) -> list[jax.Array]:
    """The echo values of the served parameters ``named`` [(name like 'layers/0/self_attn/o_proj', array)],
    in the same order; each changed array is donated (deleted) once its new value exists."""
    names = [name for name, _ in named]
    if "embed" not in names:
        raise ValueError(f"--echo-weights: the model has no 'embed' parameter (parameters: {names[:6]}...)")
    out = [x for _, x in named]
    embed = names.index("embed")
    out[embed] = _equal_norm_rows(out[embed])
    for i, name in enumerate(names):
        leaf = name.rsplit("/", 1)[-1]
        if leaf in BRANCH_OUTPUTS:
            out[i] = _scaled(out[i])
        elif name == "lm_head":
            out[i] = _copy_into(out[i], out[embed])
        elif name == "norm/weight":
            out[i] = _filled(out[i], 1.0)
        elif name == "norm/bias":
            out[i] = _filled(out[i], 0.0)
    return out


@jax.jit
def _row_norms(x):
    return jnp.linalg.norm(x.astype(jnp.float32), axis=-1)


@functools.partial(jax.jit, donate_argnums=0)
def _rows_scaled(x, norms):
    target = jnp.mean(norms)
    factor = jnp.where(norms > 0, target / jnp.maximum(norms, 1e-30), 0.0)
    return (x.astype(jnp.float32) * factor[:, None]).astype(x.dtype)


def _equal_norm_rows(embed: jax.Array) -> jax.Array:
    """``embed`` [V, D] with every row scaled to the rows' mean norm (rows of norm 0 stay 0)."""
    return _rows_scaled(embed, _row_norms(embed))


@functools.partial(jax.jit, donate_argnums=0)
def _scaled(x):
    return x * jnp.asarray(BRANCH_SCALE, x.dtype)


@functools.partial(jax.jit, donate_argnums=0)
def _copy_into(old, new):
    """``new``'s values in ``old``'s dtype (``old`` donated: its buffer can hold them)."""
    return new.astype(old.dtype)


@functools.partial(jax.jit, static_argnums=1, donate_argnums=0)
def _filled(x, value: float):
    return x * jnp.asarray(0, x.dtype) + jnp.asarray(value, x.dtype)  # from x: its sharding carries over


def echo_runner(runner, cfg) -> int:
    """Serve the echo weights of ``runner``'s parameters (a ModelRunner or a DraftRunner: both have
    ``served_weights`` / ``update_weights``) for ModelConfig ``cfg``. Returns the number of arrays that had to
    be moved to their served sharding or dtype (0: none was copied)."""
    check_supported(cfg)
    state = runner.served_weights()
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    new = echo_leaves([(param_name(path), x) for path, x in flat])
    return runner.update_weights(jax.tree_util.tree_unflatten(treedef, new))


def apply_echo(llm) -> int:
    """Make ``llm``'s target model and, with draft-model speculation, its draft echo their last input token
    (every engine replica). The prefix cache is reset: its K/V came from the old weights. Returns the number
    of arrays moved (``echo_runner``)."""
    engine, moved = llm.llm_engine, 0
    for runner in getattr(engine, "runners", None) or [engine.runner]:
        with runner.device_lock:  # a background compile's first runs of the programs read the weights
            moved += echo_runner(runner, llm.model_config)
            if runner.draft is not None:
                moved += echo_runner(runner.draft, runner.draft.cfg)
    llm.reset_prefix_cache()
    return moved


def echo_fraction(prompts: list[list[int]], outputs: list[list[int]]) -> float:
    """The fraction of output tokens equal to their prompt's last token (1.0: the model echoes exactly)."""
    hits = sum(int(np.sum(np.asarray(o) == p[-1])) for p, o in zip(prompts, outputs))
    total = sum(len(o) for o in outputs)
    return hits / total if total else float("nan")
