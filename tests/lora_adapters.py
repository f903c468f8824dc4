"""Tiny random PEFT LoRA adapters for the tests (built with ``peft`` on a tiny random checkpoint, no downloads)."""

from __future__ import annotations

import os

import pytest
import torch
import transformers


def save_peft_adapter(base_path, out_path, *, r: int, alpha: float, targets, use_rslora: bool = False,
                      seed: int = 0, std: float = 0.05):
    """A LoRA adapter with random A and B (PEFT initialises B to zeros) saved to ``out_path``; returns the base
    model with the adapter merged (fp32, eval): the reference. Skips the test without peft (test-only)."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(seed)
    base = transformers.AutoModelForCausalLM.from_pretrained(os.fspath(base_path), dtype=torch.float32)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), use_rslora=use_rslora,
                             lora_dropout=0.0)
    model = peft.get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(std * torch.randn_like(p))
    model.save_pretrained(os.fspath(out_path))
    return model.merge_and_unload().eval()
