"""Tiny random pooling checkpoints built with transformers in the test (no downloads)."""

from __future__ import annotations

import copy
import json
import os

import torch
import transformers
from hf_models import TINY, save_tokenizer_with_template

VOCAB = 448  # >= the tests' BPE tokenizer (421 tokens)
# small decoder engines: a 32-token budget, so the tests' longer prompts run in chunks
ENGINE = {"max_num_seqs": 4, "max_num_batched_tokens": 32, "max_model_len": 128, "enforce_eager": True}


def _randomize(model) -> None:
    """Random norms and biases, so a wrongly mapped one cannot hide behind ones / zeros."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))


def write_sentence_transformers(path, mode: str | None, normalize: bool) -> None:
    """modules.json (+ 1_Pooling/config.json when ``mode``), as sentence-transformers saves them."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    if mode is not None:
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
        os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
        keys = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
                "lasttoken")
        cfg = {"word_embedding_dimension": 64, **{f"pooling_mode_{k}": k == mode for k in keys}}
        with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
            json.dump(cfg, f)
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    with open(os.path.join(path, "modules.json"), "w") as f:
        json.dump(modules, f)


def save_decoder_embedder(path, seed: int = 0, **overrides):
    """A Qwen3-Embedding-style checkpoint: Qwen3Model weights (no ``model.`` prefix) with
    ``architectures: ["Qwen3ForCausalLM"]``, a tokenizer, and sentence-transformers' LAST + Normalize."""
    torch.manual_seed(seed)
    cfg = transformers.Qwen3Config(**{**TINY, "vocab_size": VOCAB, "head_dim": 16, **overrides})
    model = transformers.Qwen3Model(cfg).eval()
    _randomize(model)
    model.config.architectures = ["Qwen3ForCausalLM"]
    model.save_pretrained(os.fspath(path))
    save_tokenizer_with_template(path)
    write_sentence_transformers(path, "lasttoken", normalize=True)
    return model


def save_seq_cls(path, arch: str, num_labels: int, seed: int = 0, **overrides):
    """A ``{Llama,Qwen2,Qwen3}ForSequenceClassification`` checkpoint with a tokenizer."""
    torch.manual_seed(seed)
    family = arch.removesuffix("ForSequenceClassification")
    extra = {"head_dim": 16} if family == "Qwen3" else {}
    cfg = getattr(transformers, f"{family}Config")(**{**TINY, "vocab_size": VOCAB, "num_labels": num_labels,
                                                      **extra, **overrides})
    cfg.architectures = [arch]
    model = getattr(transformers, arch)(cfg).eval()
    _randomize(model)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)  # logits of a useful size, so the probabilities differ
    model.save_pretrained(os.fspath(path))
    save_tokenizer_with_template(path)
    return model


def hidden_states(model, ids: list[int]) -> torch.Tensor:
    """Last hidden states [T, D] of a backbone (a *Model) or a classifier's backbone."""
    backbone = getattr(model, "model", model)
    with torch.no_grad():
        return backbone(torch.tensor([ids])).last_hidden_state[0].float()


def save_encoder(path, arch: str = "BertModel", seed: int = 0, **overrides):
    """A BERT-family checkpoint (BertModel, XLMRobertaModel or their *ForSequenceClassification; ``num_labels``
    in ``overrides``) with the tests' tokenizer."""
    torch.manual_seed(seed)
    family = arch.removesuffix("ForSequenceClassification").removesuffix("Model")
    kw = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
              "max_position_embeddings": 130 if family != "Bert" else 128, "pad_token_id": 1}
    cfg = getattr(transformers, f"{family}Config")(**{**kw, **overrides})
    cfg.architectures = [arch]
    model = getattr(transformers, arch)(cfg).eval()
    _randomize(model)
    model.save_pretrained(os.fspath(path))
    save_tokenizer_with_template(path)
    return model


def encoder_hidden(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).last_hidden_state[0].float()


def save_pair_tokenizer(path) -> None:
    """The tests' BPE tokenizer with BERT's pair template: ``<pad> A <eos>`` and ``<pad> A <eos> B <eos>``, the
    second segment of token type 1 (``token_type_ids`` returned)."""
    from engine.bpe_tokenizer import bpe_tokenizer
    from tokenizers import processors

    tok = copy.deepcopy(bpe_tokenizer())  # the cached one is shared by other tests
    cls_id, sep_id = tok.convert_tokens_to_ids("<pad>"), tok.convert_tokens_to_ids("<eos>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<pad> $A <eos>", pair="<pad> $A <eos> $B:1 <eos>:1",
        special_tokens=[("<pad>", cls_id), ("<eos>", sep_id)])
    tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    tok.init_kwargs["model_input_names"] = tok.model_input_names
    tok.save_pretrained(str(path))


MODERNBERT = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
              "num_attention_heads": 4, "max_position_embeddings": 64, "local_attention": 8,
              "global_attn_every_n_layers": 2, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
              "cls_token_id": 1, "sep_token_id": 2}


def save_modernbert(path, arch: str = "ModernBertModel", **overrides):
    """A tiny ModernBERT checkpoint (3 layers: global, local, global; an 8-token local window)."""
    torch.manual_seed(0)
    model = getattr(transformers, arch)(transformers.ModernBertConfig(**{**MODERNBERT, **overrides})).eval()
    with torch.no_grad():  # random norms and biases: a wrongly mapped one cannot hide behind ones / zeros
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.config.architectures = [arch]
    model.save_pretrained(os.fspath(path))
    return model
