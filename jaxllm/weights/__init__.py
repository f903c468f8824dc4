"""Checkpoint readers (safetensors, GGUF), per-architecture key maps and sharded placement."""
