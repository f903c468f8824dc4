"""Writing GGUF files in tests as llama.cpp's converter does: the hyperparameters every architecture carries, and
the file's sections in order. Each test adds its own tokenizer, rope and tensor entries in between."""

from __future__ import annotations

import os

import gguf


def gguf_writer(path, arch: str, cfg) -> gguf.GGUFWriter:
    """A writer for ``arch`` holding the block, context, embedding, feed-forward, head counts, RMSNorm epsilon
    and vocabulary size of the transformers config ``cfg``."""
    w = gguf.GGUFWriter(os.fspath(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    return w


def finish_gguf(w: gguf.GGUFWriter) -> None:
    """Write the header, the key-value metadata and the tensors, and close the file."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
