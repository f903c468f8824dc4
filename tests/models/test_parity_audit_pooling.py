"""Transformers parity of the classification heads on awkward configs: BERT / RoBERTa / XLM-R cross-encoders and
classifiers (activations, LayerNorm eps, one token type, XLM-R positions after pad_token_id 0 or 1, one label)
and decoder ``*ForSequenceClassification`` heads (attention / MLP biases, head_dim independent of the hidden
size, sliding windows shorter than the prompt, MQA with yarn rope, tied embeddings). Raw logits
(``use_activation=False``) within 1e-4 relative of transformers' ``.logits``, prompts run in chunks on the
decoder engines."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jaxllm import LLM, PoolingParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pooling"))
from pooling_models import save_encoder, save_seq_cls

ENGINE = {"max_num_seqs": 4, "max_num_batched_tokens": 32, "max_model_len": 64, "enforce_eager": True}
TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog again and again."]
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}

CASES = {
    "bert-gelu-new-eps": ("BertForSequenceClassification", 2, {"hidden_act": "gelu_new", "layer_norm_eps": 1e-5}),
    "bert-one-token-type-relu": ("BertForSequenceClassification", 3, {"type_vocab_size": 1, "hidden_act": "relu"}),
    "xlmr-pad0-one-token-type": ("XLMRobertaForSequenceClassification", 2, {"pad_token_id": 0, "type_vocab_size": 1}),
    "roberta-one-label": ("RobertaForSequenceClassification", 1, {}),
    "llama-biases-headdim": ("LlamaForSequenceClassification", 2, {"attention_bias": True, "mlp_bias": True,
                                                                   "head_dim": 32}),
    "mistral-window-headdim": ("MistralForSequenceClassification", 3, {"sliding_window": 5, "head_dim": 32}),
    "qwen2-mqa-yarn": ("Qwen2ForSequenceClassification", 2, {"num_key_value_heads": 1, "rope_scaling": YARN}),
    "qwen3-bias-window-one-label": ("Qwen3ForSequenceClassification", 1, {
        "attention_bias": True, "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 0,
        "tie_word_embeddings": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_classifier_logits_match_transformers(tmp_path, case):
    arch, num_labels, overrides = CASES[case]
    if arch.startswith(("Bert", "Roberta", "XLMRoberta")):
        model = save_encoder(tmp_path, arch, num_labels=num_labels, **overrides)
    else:
        model = save_seq_cls(tmp_path, arch, num_labels, **overrides)
    llm = LLM(str(tmp_path), **ENGINE)
    tok = llm.get_tokenizer()
    outs = llm.classify(TEXTS, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
    for text, out in zip(TEXTS, outs):
        with torch.no_grad():
            ref = model(torch.tensor([tok(text).input_ids])).logits[0].float().numpy()
        assert len(out.outputs.probs) == num_labels
        assert np.abs(np.asarray(out.outputs.probs) - ref).max() <= 1e-4 * np.abs(ref).max()
