"""EncoderRunner: bidirectional encoders (the BERT family) on a dense, non-paged path.

Why not the paged engine: a bidirectional layer needs every token of the sequence before any output is
final, so a prompt cannot be chunked, and nothing is reused afterwards (no decode, no prefix to cache). Each
request therefore runs whole, in one call: ``batching.plan_batches`` sorts the requests by length and packs
them into [B, L] batches, L a length bucket (``batching.length_buckets``: four per octave, so a row pads less
than a quarter of its length) and B = ``max_num_batched_tokens // L`` (at least 1, at most ``max_num_seqs``
and what keeps XLA's attention scores within ``batching.SCORES_BYTES``) rows; short rows are padded and masked
out of attention (``key_value_seq_lengths``). One program per length bucket, compiled and executed once at
start-up unless ``enforce_eager``; token-level tasks use a second program per bucket compiled on first use.
``IN_FLIGHT`` batches are queued on the device while the host pools the oldest one.
"""

from __future__ import annotations

import collections
import functools
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxllm.engine.request_checks import check_prompt
from jaxllm.models.bert import EncoderConfig
from jaxllm.models.modernbert import ModernBertConfig
from jaxllm.pooling.batching import batch_rows, length_buckets, plan_batches
from jaxllm.pooling.config import pooling_model_info
from jaxllm.pooling.heads import encoder_head, load_dense_projector
from jaxllm.pooling.outputs import PoolingOutput, pooled_output
from jaxllm.pooling.pooler import PooledState, finish
from jaxllm.pooling.st_config import st_dense_modules

logger = logging.getLogger("jaxllm")


# Batches queued on the device at once: the host fills and launches the next ones while the oldest runs, so
# its per-batch work (padding, pooling heads, outputs) hides behind the device's.
IN_FLIGHT = 2


def _encode(graphdef, state, ids, types, lens, *, pooling_type: str, token_rows: bool, attention_impl):
    """ids / types [B, L], lens [B] -> (pooled [B, D] float32, hidden [B, L, D] float32 or None). MEAN returns
    the masked row sum (the host divides by the length). Rows are picked (or summed in float32) before any
    cast, so only token-level tasks convert the whole [B, L, D] output."""
    one_row = pooling_type in ("CLS", "LAST") and not token_rows  # the model returns that row alone
    hidden = nnx.merge(graphdef, state)(ids, types, lens, attention_impl, pooling_type if one_row else None)
    with jax.named_scope("pool"):
        if one_row or pooling_type == "CLS":
            pooled = hidden[:, 0]
        elif pooling_type == "LAST":
            pooled = jnp.take_along_axis(hidden, jnp.maximum(lens - 1, 0)[:, None, None], axis=1)[:, 0]
        else:
            mask = (jnp.arange(ids.shape[1])[None, :] < lens[:, None]).astype(hidden.dtype)
            pooled = jnp.einsum("bld,bl->bd", hidden, mask, preferred_element_type=jnp.float32)
    return pooled.astype(jnp.float32), (hidden.astype(jnp.float32) if token_rows else None)


def _check_no_kv_cache_args(args) -> None:
    """Encoders keep no KV cache: its settings cannot apply, so setting one is an error."""
    for name, value in (("kv_cache_dtype", args.kv_cache_dtype if args.kv_cache_dtype != "auto" else None),
                        ("num_gpu_blocks_override", args.num_gpu_blocks_override),
                        ("kv_cache_memory_bytes", args.kv_cache_memory_bytes),
                        ("preemption_mode", args.preemption_mode),
                        ("host_prefix_cache", args.host_prefix_cache or None)):
        if value is not None:
            raise ValueError(f"{name}={value!r}: encoder models (BERT family) run without a KV cache")


def _load_weights(path: str, config, hf: dict, mesh, args, num_labels: int):
    """(model, head tensors or None) of a BERT-family or ModernBERT checkpoint (random with load_format="dummy")."""
    from jaxllm.weights.bert import dummy_bert, load_bert
    from jaxllm.weights.modernbert import dummy_modernbert, load_modernbert

    if isinstance(config, ModernBertConfig):
        if args.load_format == "dummy":
            return dummy_modernbert(config, hf, mesh, args.seed, num_labels)
        return load_modernbert(path, config, hf, mesh, num_labels)
    if args.load_format == "dummy":
        return dummy_bert(config, mesh, args.seed, num_labels)
    return load_bert(path, config, mesh, num_labels)


class EncoderRunner:
    """``run(request_ids, [(token_ids, PoolingParams)]) -> [PoolingOutput]`` for an encoder model.

    Attention: the fused cuDNN kernel on GPUs for 16-bit models (XLA's attention writes the [B, H, L, L] scores
    to memory, which costs as much as the layer's matmuls at L = 512), XLA elsewhere or when cuDNN cannot
    compile it here (a warning says so)."""

    def __init__(self, model, config: EncoderConfig, info, mesh, args, *, enforce_eager: bool, head=None):
        self.config, self.info, self.args, self.head = config, info, args, head
        self.graphdef, self.state = nnx.split(model)
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self.lengths = length_buckets(args.max_model_len)
        on_gpu = mesh.devices.flat[0].platform == "gpu"
        self.attention_impl = "cudnn" if on_gpu and config.dtype in ("bfloat16", "float16") else None
        self.compile_seconds = 0.0
        self._encode = jax.jit(functools.partial(_encode, self.graphdef),
                               static_argnames=("pooling_type", "token_rows", "attention_impl"))
        self._compiled: dict = {}
        if not enforce_eager:
            for length in self.lengths:
                self._program(length, False)
            for length in self.lengths:
                self._run_once(length)

    @classmethod
    def load(cls, path: str, hf: dict, mesh, args, *, platform: str) -> EncoderRunner:
        """The runner of the encoder checkpoint at ``path`` (config.json ``hf``) for validated ``args``."""

        if args.quantization is not None:
            raise ValueError(f"quantization={args.quantization!r} is not supported for encoder models")
        if mesh.devices.size > 1:
            raise ValueError("tensor_parallel_size > 1 is not supported for encoder models (BERT family)")
        if args.load_format not in ("auto", "safetensors", "dummy"):
            raise ValueError(f"load_format={args.load_format!r} is not supported for encoder models")
        _check_no_kv_cache_args(args)
        modern = hf["architectures"][0].startswith("ModernBert")
        config = (ModernBertConfig if modern else EncoderConfig).from_hf(hf, args.dtype)
        if args.max_model_len is not None and args.max_model_len > config.max_model_len:
            raise ValueError(f"max_model_len={args.max_model_len} is longer than the {config.max_model_len} "
                             f"positions of {config.architecture}")
        info = pooling_model_info(path, hf, args.pooler_config, args.convert)
        args = args.resolve(platform, info.model_max_len(config.max_model_len), pooling=True)
        model, tensors = _load_weights(path, config, hf, mesh, args, info.num_labels)
        head = None if tensors is None else encoder_head(config.architecture, tensors, hf)
        if head is None and info.projected_size is not None:  # an embedder's Dense modules
            head = load_dense_projector(path, st_dense_modules(path))
        return cls(model, config, info, mesh, args, enforce_eager=args.enforce_eager, head=head)

    def batch_rows(self, length: int) -> int:
        return batch_rows(length, self.args.max_num_batched_tokens, self.args.max_num_seqs, self.config.num_heads)

    def plan(self, lengths: list[int]) -> list[tuple[list[int], int]]:
        """(request indices, padded length) per batch for requests of these lengths (``plan_batches``)."""
        return plan_batches(lengths, self.lengths, self.args.max_num_batched_tokens, self.args.max_num_seqs,
                            self.config.num_heads)

    def _program(self, length: int, token_rows: bool):
        key = (length, token_rows)
        if key not in self._compiled:
            t0 = time.perf_counter()
            try:
                self._compiled[key] = self._lower(length, token_rows).compile()
            except Exception as error:  # any cuDNN refusal: XLA's attention always compiles
                if self.attention_impl is None:
                    raise
                logger.warning("cuDNN attention does not compile here (%s: %s); using XLA's", type(error).__name__,
                               (str(error).splitlines() or [""])[0][:200])
                self.attention_impl = None
                self._compiled.clear()
                self._compiled[key] = self._lower(length, token_rows).compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._compiled[key]

    def _run_once(self, length: int) -> None:
        """Execute the compiled program of ``length`` once on an all-padding batch and wait for it. A program's
        first execution records its CUDA command buffers and loads its kernels (cuDNN's included) into the
        context, tens of milliseconds for a 12-layer program (docs/performance.md); paid here, at start-up as
        the paged runners pay it, rather than inside the first ``embed`` call that meets each length."""
        rows = self.batch_rows(length)
        ids = np.zeros((rows, length), np.int32)
        dev = jax.device_put((ids, ids, np.zeros(rows, np.int32)), self._replicated)
        jax.block_until_ready(self._program(length, False)(self.state, *dev))

    def _lower(self, length: int, token_rows: bool, lowering_platforms: tuple[str, ...] | None = None):
        """The lowered program of one length bucket; ``lowering_platforms`` as ``ModelRunner.lower``."""
        rows = self.batch_rows(length)
        ids = jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=self._replicated)
        lens = jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=self._replicated)
        return self._encode.trace(self.state, ids, ids, lens, pooling_type=self.info.pooling_type,
                                  token_rows=token_rows, attention_impl=self.attention_impl
                                  ).lower(lowering_platforms=lowering_platforms)

    def run(self, request_ids: list[str], requests: list, use_tqdm: bool = False) -> list[PoolingOutput]:
        """Validate every request (before any device work), then encode them in length-sorted batches
        (``plan_batches``), up to ``IN_FLIGHT`` more batches queued while the host finishes the oldest one."""
        for rid, (ids, _) in zip(request_ids, requests):
            check_prompt(rid, ids, self.config.vocab_size, self.args.max_model_len, generates=False)
        results: list[PoolingOutput | None] = [None] * len(requests)
        bar = None
        if use_tqdm:  # True, or a callable building the bar in tqdm's place (vLLM's contract)
            from tqdm.auto import tqdm

            make_bar = use_tqdm if callable(use_tqdm) else tqdm
            bar = make_bar(total=len(requests), desc="Processed prompts", dynamic_ncols=True)
        pending: collections.deque = collections.deque()
        lengths = [len(ids) for ids, _ in requests]
        for batch, length in self.plan(lengths):
            pending.append(self._launch(batch, requests, length))
            if len(pending) > IN_FLIGHT:
                self._collect(*pending.popleft(), requests, results, bar)
        while pending:
            self._collect(*pending.popleft(), requests, results, bar)
        if bar is not None:
            bar.close()
        return results

    def _launch(self, batch: list[int], requests: list, length: int):
        """Pad the batch to [rows, length] and start its program (asynchronous)."""
        rows = self.batch_rows(length)
        ids = np.zeros((rows, length), np.int32)
        types = np.zeros((rows, length), np.int32)
        lens = np.zeros(rows, np.int32)
        for r, j in enumerate(batch):
            toks, params = requests[j]
            ids[r, :len(toks)], lens[r] = toks, len(toks)
            second = (params.extra_kwargs or {}).get("compressed_token_type_ids")
            if second is not None and self.config.type_vocab_size > 1:  # a pair: its second segment is type 1
                types[r, second:len(toks)] = 1
        token_rows = any(requests[j][1].task.startswith("token_") for j in batch)
        program = self._program(length, token_rows)
        dev = jax.device_put((ids, types, lens), self._replicated)
        pooled, hidden = program(self.state, *dev)
        for leaf in (pooled, hidden):
            if leaf is not None:
                leaf.copy_to_host_async()
        return batch, lens, pooled, hidden

    def _collect(self, batch, lens, pooled, hidden, requests: list, results: list, bar) -> None:
        pooled, hidden = jax.device_get((pooled, hidden))
        for r, j in enumerate(batch):
            state = PooledState()
            state.add(self.info.pooling_type, pooled[r], int(lens[r]),
                      None if hidden is None else hidden[r, :lens[r]])
            results[j] = pooled_output(finish(self.info, self.head, state, requests[j][1]))
        if bar is not None:
            bar.update(len(batch))
