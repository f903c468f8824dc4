"""EAGLE-1 speculation on the runner side (jax): the draft-model machinery (draft_runner.py) with an EAGLE head.

The head's input at position p is the target's last hidden state there. Every target step returns its hidden
states [T, D] (all tokens: static shapes) and ``record_hidden`` scatters them by the step's slot mapping into a
paged feature store [num_blocks * block_size, D] addressed like the KV cache: the store holds, at each
computed position's slot, the target's state of that position. Slots of rejected drafts are written again
when the target computes those positions again, as the KV cache's are, so the head reads only positions
before the target's ``num_computed_tokens`` (``DraftRunner.lag`` = 1). A draft step's input for a placeholder
token (its previous step's choice, -(row + 1)) is instead that row's output state of the previous step, on
device: the k drafts need no host round trip.

The head shares the target's embedding and (unless its checkpoint has its own) LM head, read from the target's
current parameters at each call, so sleep mode and weight updates of the target apply.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxllm.parallel.multihost import program_arg
from jaxllm.runner.buckets import Bucket
from jaxllm.runner.input_batch import StepInputs, dummy_step_inputs, pack_step_inputs, unpack_step_inputs
from jaxllm.runner.lowering import shapes_of
from jaxllm.runner.programs import ForwardKey
from jaxllm.spec_decode.config import SpeculativeConfig
from jaxllm.spec_decode.draft_runner import DraftRunner
from jaxllm.spec_decode.draft_sampling import DraftSampleKey
from jaxllm.spec_decode.eagle_head import eagle_config, eagle_hf_config, load_eagle_head


def make_eagle(args, target_cfg, mesh, ladder, max_blocks_per_seq: int, target_arrays) -> EagleRunner:
    """The EagleRunner of ``speculative_config={"method": "eagle", "model": PATH}`` on the target's mesh."""
    from jaxllm.model_source import resolve_model_path

    spec = SpeculativeConfig.from_dict(args.speculative_config)
    if target_arrays is None:
        raise ValueError("speculative_config method='eagle' needs the target's embedding and LM head")
    path = resolve_model_path(spec.model, None, token=args.hf_token, cache_dir=args.download_dir)
    cfg = eagle_config(spec.model, eagle_hf_config(path), target_cfg)

    def load():
        return load_eagle_head(path, cfg, mesh, dummy=args.load_format == "dummy")

    runner = EagleRunner(load(), cfg, target_cfg, mesh, args, ladder, max_blocks_per_seq, target_arrays)
    runner.weights_source = load  # sleep level 2
    return runner


def _eagle_forward(graphdef, treedef, mesh, params, shared, kv_caches, store, packed_inputs, prev_tokens,
                   prev_hidden, *, dims, attention_impl, logits_sharding):
    """-> (kv_caches, logits [S, V] f32, argmax ids [R], output states [R, D]), R = max_num_seqs rows (padded
    like ``prev_tokens``). ``shared``: the target's (embedding [V, D], LM head [V, D]); ``store``: the feature
    store [slots, D]; a negative input id -(row + 1) reads ``prev_tokens[row]`` and ``prev_hidden[row]``."""
    inputs = unpack_step_inputs(packed_inputs, *dims)
    ids = inputs.input_ids
    rows = jnp.clip(-ids - 1, 0, prev_tokens.shape[0] - 1)
    placeholder = ids < 0
    slots = jnp.clip(inputs.attention.slot_mapping, 0, store.shape[0] - 1)
    features = jnp.where(placeholder[:, None], prev_hidden[rows], store[slots])
    head = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, params))
    hidden, kv_caches = head.forward_paged(jnp.where(placeholder, prev_tokens[rows], ids), inputs.positions,
                                           features, kv_caches, inputs.attention, attention_impl, mesh, shared[0])
    last = hidden[inputs.logits_indices]
    logits = jax.lax.with_sharding_constraint(head.compute_logits(last, shared[1]), logits_sharding)
    pad = max(0, prev_tokens.shape[0] - last.shape[0])
    greedy = jnp.pad(jnp.argmax(logits, axis=-1).astype(jnp.int32), (0, pad))[:prev_tokens.shape[0]]
    out = jnp.pad(last, ((0, pad), (0, 0)))[:prev_tokens.shape[0]].astype(prev_hidden.dtype)
    return kv_caches, logits, greedy, out


def _record(store, hidden, slots):
    """store [N, D] with ``hidden`` [T, D] written at ``slots`` [T] (-1: padding, dropped)."""
    slots = jnp.where(slots < 0, store.shape[0], slots)
    return store.at[slots].set(hidden.astype(store.dtype), mode="drop")


class EagleRunner(DraftRunner):
    """``target_arrays``: a callable returning the target's current (embedding [V, D], LM head [V, D])."""

    lag = 1
    records_hidden = True  # the target's steps return their hidden states for ``record_hidden``

    def __init__(self, head, cfg, target_cfg, mesh, args, ladder, max_blocks_per_seq: int, target_arrays):
        super().__init__(head, cfg, target_cfg, mesh, args, ladder, max_blocks_per_seq)
        self._target_arrays = target_arrays
        self._forward = jax.jit(functools.partial(_eagle_forward, self.graphdef, self._treedef, mesh),
                                static_argnames=("dims", "attention_impl", "logits_sharding"),
                                donate_argnums=(2,))
        self._record = jax.jit(_record, donate_argnums=(0,))
        self._feature_dtype = jnp.dtype(target_cfg.dtype)
        self.store = None  # allocate(): [num_blocks * block_size, D]
        self._prev_hidden = self._zero_hidden()

    def _zero_hidden(self):
        return jax.device_put(np.zeros((self._max_seqs, self.cfg.hidden_size), self._feature_dtype),
                              self._replicated)

    @property
    def bytes_per_block(self) -> int:
        """The head's KV cache and the feature store of one block."""
        return self.cache_plan.bytes_per_block + self.block_size * self.cfg.hidden_size * self._feature_dtype.itemsize

    def step_cost(self, peaks, num_devices: int):
        """A one-layer Llama's cost (its LM head included) plus ``fc``'s [2D, D] weights and FLOPs."""
        cost = super().step_cost(peaks, num_devices)
        fc = 2 * self.cfg.hidden_size ** 2
        return dataclasses.replace(cost, weight_bytes=cost.weight_bytes + fc * jnp.dtype(self.cfg.dtype).itemsize,
                                   flops_per_token=cost.flops_per_token + 2 * fc)

    def _store_shape(self, num_blocks: int):
        return jax.ShapeDtypeStruct((num_blocks * self.block_size, self.cfg.hidden_size), self._feature_dtype,
                                    sharding=self._replicated)

    def allocate(self, num_blocks: int) -> None:
        super().allocate(num_blocks)
        self.store = jnp.zeros(self._store_shape(num_blocks).shape, self._feature_dtype, device=self._replicated)

    def _set_cache_shapes(self, num_blocks: int) -> None:  # SleepMode: the cache (and the store) released
        super()._set_cache_shapes(num_blocks)
        self.store = self._store_shape(num_blocks)

    def record_hidden(self, hidden, slot_mapping: np.ndarray) -> None:
        """Write a target step's hidden states [T, D] into the store at its slots [T] (on device, no sync)."""
        self.store = self._record(self.store, hidden, program_arg(slot_mapping, self._replicated))

    def _compile(self, key):
        if isinstance(key, DraftSampleKey):
            return super()._compile(key)
        b = key.bucket
        padding = jax.device_put(pack_step_inputs(dummy_step_inputs(b, self.max_blocks_per_seq)), self._replicated)
        shared = shapes_of(self._target_arrays())
        return self._forward.lower(self.params, shared, self.cache_plan.shapes(),
                                   self._store_shape(self.cache_plan.num_blocks), padding, self._no_tokens,
                                   self._prev_hidden, dims=(b.num_tokens, b.num_seqs, self.max_blocks_per_seq),
                                   attention_impl=self._attention, logits_sharding=self._replicated).compile()

    def _step(self, inputs: StepInputs, prev, bucket: Bucket):
        packed = program_arg(pack_step_inputs(inputs), self._replicated)
        forward = self.programs.get(ForwardKey(bucket))
        self.kv_caches, logits, greedy, self._prev_hidden = forward(
            self.params, self._target_arrays(), self.kv_caches, self.store, packed, prev, self._prev_hidden)
        return greedy, logits

    def run_each_program_once(self) -> None:
        super().run_each_program_once()
        for t in sorted({b.num_tokens for b in self.ladder.buckets}):  # the recording program of each T
            hidden = np.zeros((t, self.cfg.hidden_size), self._feature_dtype)
            self.record_hidden(jax.device_put(hidden, self._replicated), np.full(t, -1, np.int32))
        jax.block_until_ready(self.store)


def target_arrays(runner):
    """A callable returning ``runner``'s current (embedding, LM head) parameter arrays (the embedding twice for
    tied embeddings), found on first use by their places in its flat parameter list (only an EAGLE head calls
    it: other targets need not have these parameters)."""

    @functools.cache
    def places() -> tuple[int, int]:
        tree = jax.tree_util.tree_unflatten(runner._treedef, list(range(len(runner.params))))
        embed = jax.tree_util.tree_leaves(tree["embed"])[0]
        return embed, (jax.tree_util.tree_leaves(tree["lm_head"])[0] if "lm_head" in tree else embed)

    return lambda: tuple(runner.params[i] for i in places())
