"""Strict loading of the encoder checkpoints (BERT family, ModernBERT): a missing, unexpected or duplicate key or
a wrong shape is a WeightLoadError naming it, for backbone and classifier-head keys alike."""

from __future__ import annotations

import pytest
import torch
from pooling_models import save_encoder, save_modernbert
from safetensors.torch import load_file, save_file

from jaxllm.models.bert import EncoderConfig
from jaxllm.models.modernbert import ModernBertConfig
from jaxllm.parallel.sharding import make_mesh
from jaxllm.weights.bert import load_bert
from jaxllm.weights.loader import WeightLoadError
from jaxllm.weights.modernbert import load_modernbert


def _bert(path):
    model = save_encoder(path, "BertForSequenceClassification", num_labels=2)
    cfg = EncoderConfig.from_hf(model.config.to_dict())
    return lambda: load_bert(path, cfg, make_mesh(1), num_labels=2)


def _modernbert(path):
    model = save_modernbert(path, "ModernBertForSequenceClassification", num_labels=2)
    hf = model.config.to_dict()
    cfg = ModernBertConfig.from_hf(hf)
    return lambda: load_modernbert(path, cfg, hf, make_mesh(1), num_labels=2)


CASES = {"bert": (_bert, "bert.encoder.layer.1.output.dense.weight", "classifier.weight"),
         "modernbert": (_modernbert, "model.layers.1.mlp.Wo.weight", "classifier.weight")}


def _rewrite(path, edit):
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("family", sorted(CASES))
def test_encoder_loading_is_strict(tmp_path, family):
    make, backbone_key, head_key = CASES[family]
    load = make(tmp_path)
    _, head = load()
    assert head_key in head
    tensors = load_file(tmp_path / "model.safetensors")
    for key in (backbone_key, head_key):
        _rewrite(tmp_path, lambda t, key=key: t.pop(key))
        with pytest.raises(WeightLoadError, match=rf"missing 1 key.*{key.split('.', 1)[1]}"):
            load()
        _rewrite(tmp_path, lambda t, key=key: t.__setitem__(key, torch.zeros(3)))
        with pytest.raises(WeightLoadError, match=rf"shape mismatch for '{key}'"):
            load()
        _rewrite(tmp_path, lambda t, key=key: t.__setitem__(key, tensors[key]))
    twin = backbone_key.split(".", 1)[1]  # the same weight without the task model's prefix
    _rewrite(tmp_path, lambda t: t.__setitem__(twin, tensors[backbone_key]))
    with pytest.raises(WeightLoadError, match="duplicate key"):
        load()
    _rewrite(tmp_path, lambda t: (t.pop(twin), t.__setitem__("bogus.weight", torch.zeros(3))))
    with pytest.raises(WeightLoadError, match="unexpected key 'bogus.weight'"):
        load()
