"""Every decoder family jaxllm serves, as vLLM converts it: ``XForSequenceClassification`` (LAST token, the
``score`` head) for every family and ``XModel`` embedders (LAST, normalized) for each checkpoint layout
(``model.`` / GPT-2's ``transformer.`` / GPT-NeoX's ``gpt_neox.`` / OPT's ``decoder.`` prefixes left out, Gemma 3's
text-only names), against transformers on tiny random fp32 checkpoints (a 20-token prompt, run in two chunks).
Families without a transformers classifier class (OLMoE, Granite, Cohere, and the MoE families of
tests/models/moe_families_cases.py) get a checkpoint of the causal LM's backbone and a ``score.weight`` written
here, checked against the backbone's last hidden state times it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from jaxllm import LLM, PoolingParams
from jaxllm.pooling.config import pooling_model_info, resolve_runner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from hf_models import make_config

ENGINE = {"max_num_seqs": 2, "max_num_batched_tokens": 16, "max_model_len": 64, "enforce_eager": True,
          "skip_tokenizer_init": True}
IDS = [int(x) for x in np.random.default_rng(0).integers(3, 200, 20)]  # no pad id (0-2) inside
FAMILIES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM",
            "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM", "Olmo2ForCausalLM", "MixtralForCausalLM",
            "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "OlmoeForCausalLM", "GraniteForCausalLM",
            "SmolLM3ForCausalLM", "Starcoder2ForCausalLM", "CohereForCausalLM", "GPT2LMHeadModel",
            "GPTNeoXForCausalLM", "PhiForCausalLM", "StableLmForCausalLM", "OPTForCausalLM", "GPTJForCausalLM", "OlmoForCausalLM",
            "GlmForCausalLM", "Glm4ForCausalLM", "NemotronForCausalLM", "Cohere2ForCausalLM", "Ernie4_5ForCausalLM",
            "Exaone4ForCausalLM", "Olmo3ForCausalLM", "SeedOssForCausalLM", "FalconForCausalLM",
            "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "GptOssForCausalLM")
EMBEDDERS = ("LlamaForCausalLM", "Gemma3ForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM", "OPTForCausalLM")


def _family(arch: str) -> str:
    name = arch.removesuffix("ForCausalLM").removesuffix("LMHeadModel")
    return "Gemma3Text" if name == "Gemma3" else name  # (Gemma3Model is the vision-language one)


def _randomized(model, gemma: bool):
    """Random norms and biases (a wrongly mapped one cannot hide behind ones / zeros), well-separated routing."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                p.copy_((0.0 if gemma else 1.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(torch.randn_like(p))
            elif name == "score.weight":
                p.normal_(0, 1.0)
    return model.eval()


def _save(path, arch: str, form: str, num_labels: int = 2):
    """A tiny ``{family}{form}`` checkpoint; (reference fn ids -> [D] last hidden row or [L] logits)."""
    torch.manual_seed(0)
    cfg = make_config(arch, num_labels=num_labels, pad_token_id=0)
    name = _family(arch) + form
    if hasattr(transformers, name):
        model = _randomized(getattr(transformers, name)(cfg), arch.startswith("Gemma"))
        model.config.architectures = [name]
        model.save_pretrained(os.fspath(path))
        if form == "Model":
            return lambda ids: model(torch.tensor([ids])).last_hidden_state[0, -1]
        return lambda ids: model(torch.tensor([ids])).logits[0]
    # no transformers classifier: the causal LM's backbone (``model.*``) and a score head of our own
    lm = _randomized(getattr(transformers, arch)(cfg), False)
    score = torch.randn(num_labels, cfg.hidden_size)
    lm.save_pretrained(os.fspath(path))  # (transformers writes its checkpoint layout, e.g. per-expert MoE keys)
    file = os.path.join(path, "model.safetensors")
    tensors = {k: v for k, v in load_file(file).items() if not k.startswith("lm_head.")}
    save_file({**tensors, "score.weight": score}, file)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({**config, "architectures": [name]}, f)
    return lambda ids: lm.model(torch.tensor([ids])).last_hidden_state[0, -1] @ score.T


@pytest.mark.parametrize("arch", FAMILIES)
def test_sequence_classification(tmp_path, arch):
    """``XForSequenceClassification``: runner "auto" pools; raw logits of the last token within 1e-4."""
    ref = _save(tmp_path, arch, "ForSequenceClassification")
    llm = LLM(str(tmp_path), **ENGINE)
    assert llm.runner_type == "pooling" and llm.supported_tasks == ("classify", "token_classify")
    out = llm.classify({"prompt_token_ids": IDS}, pooling_params=PoolingParams(use_activation=False),
                       use_tqdm=False)[0]
    with torch.no_grad():
        want = ref(IDS).float().numpy()
    assert np.abs(np.asarray(out.outputs.probs) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    if arch == "GPT2LMHeadModel":  # bad input as for generate: named, before device work
        with pytest.raises(ValueError, match="vocab"):
            llm.classify([{"prompt_token_ids": IDS}, {"prompt_token_ids": [5, 10**6]}], use_tqdm=False)


@pytest.mark.parametrize("arch", EMBEDDERS)
def test_base_model_embedder(tmp_path, arch):
    """``XModel`` (keys without the family's prefix): last token, normalized, within 1e-4."""
    ref = _save(tmp_path, arch, "Model")
    llm = LLM(str(tmp_path), **ENGINE)
    out = llm.embed({"prompt_token_ids": IDS}, use_tqdm=False)[0]
    with torch.no_grad():
        want = ref(IDS).float().numpy()
    np.testing.assert_allclose(out.outputs.embedding, want / np.linalg.norm(want), atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", ["granitemoe", "granitemoeshared", "phimoe", "dbrx", "ernie-moe"])
def test_moe_family_classifiers(tmp_path, case):
    """The MoE families of tests/models/moe_families_cases.py as ``XForSequenceClassification`` (the causal LM's
    backbone and a ``score.weight``, as vLLM converts them): the backbone's last row times the head."""
    from moe_families_cases import CASES, save_moe_model

    lm = save_moe_model(tmp_path, case)
    file = os.path.join(tmp_path, "model.safetensors")
    score = torch.randn(2, lm.config.hidden_size if case != "dbrx" else lm.config.d_model)
    tensors = {k: v for k, v in load_file(file).items() if not k.startswith("lm_head.")}
    save_file({**tensors, "score.weight": score}, file)
    with open(os.path.join(tmp_path, "config.json")) as f:
        config = json.load(f)
    family = CASES[case][0].removesuffix("ForCausalLM")
    with open(os.path.join(tmp_path, "config.json"), "w") as f:
        json.dump({**config, "architectures": [f"{family}ForSequenceClassification"], "num_labels": 2}, f)
    llm = LLM(str(tmp_path), **ENGINE)
    out = llm.classify({"prompt_token_ids": IDS}, pooling_params=PoolingParams(use_activation=False),
                       use_tqdm=False)[0]
    with torch.no_grad():
        want = (lm.base_model(torch.tensor([IDS])).last_hidden_state[0, -1] @ score.T).numpy()
    assert np.abs(np.asarray(out.outputs.probs) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_causal_lm_as_embedder_skips_untied_head(tmp_path):
    """GPT-NeoX's untied ``embed_out`` is skipped when its causal LM pools (convert="embed")."""
    torch.manual_seed(0)
    lm = _randomized(transformers.GPTNeoXForCausalLM(make_config("GPTNeoXForCausalLM")), False)
    lm.save_pretrained(os.fspath(tmp_path))
    llm = LLM(str(tmp_path), runner="pooling", convert="embed", **ENGINE)
    out = llm.embed({"prompt_token_ids": IDS}, use_tqdm=False)[0]
    with torch.no_grad():
        want = lm.gpt_neox(torch.tensor([IDS])).last_hidden_state[0, -1].numpy()
    np.testing.assert_allclose(out.outputs.embedding, want / np.linalg.norm(want), atol=1e-4, rtol=0)


def test_one_label_reward(tmp_path):
    """``reward`` of a one-label classifier (a reward model): [T, 1], sigmoid of every token's score."""
    torch.manual_seed(0)
    _save(tmp_path, "LlamaForCausalLM", "ForSequenceClassification", num_labels=1)
    model = transformers.LlamaForSequenceClassification.from_pretrained(os.fspath(tmp_path)).eval()
    llm = LLM(str(tmp_path), **ENGINE)
    assert "score" in llm.supported_tasks
    out = llm.reward({"prompt_token_ids": IDS}, use_tqdm=False)[0]
    with torch.no_grad():
        logits = model.score(model.model(torch.tensor([IDS])).last_hidden_state[0])
    np.testing.assert_allclose(out.outputs.data, torch.sigmoid(logits).numpy(), atol=1e-5)
    raw = llm.reward({"prompt_token_ids": IDS}, pooling_params=PoolingParams(use_activation=False),
                     use_tqdm=False)[0]
    np.testing.assert_allclose(raw.outputs.data, logits.numpy(), atol=1e-4)


def test_convert_reward(tmp_path):
    """convert="reward" (vLLM's as_reward_model) of a causal LM: every token's hidden row through the
    classification activation (softmax over its dims), raw with use_activation=False; "token_classify" only."""
    torch.manual_seed(0)
    lm = _randomized(transformers.Qwen2ForCausalLM(make_config("Qwen2ForCausalLM")), False)
    lm.save_pretrained(os.fspath(tmp_path))
    llm = LLM(str(tmp_path), runner="pooling", convert="reward", **ENGINE)
    assert llm.supported_tasks == ("token_classify",)
    with torch.no_grad():
        hidden = lm.model(torch.tensor([IDS])).last_hidden_state[0]
    out = llm.reward({"prompt_token_ids": IDS}, use_tqdm=False)[0].outputs.data
    np.testing.assert_allclose(out, torch.softmax(hidden, -1).numpy(), atol=1e-5)
    raw = llm.encode({"prompt_token_ids": IDS}, pooling_task="token_classify",
                     pooling_params=PoolingParams(use_activation=False), use_tqdm=False)[0].outputs.data
    np.testing.assert_allclose(raw, hidden.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="Embedding API is not supported"):
        llm.embed({"prompt_token_ids": IDS}, use_tqdm=False)


def test_qwen2_reward_model(tmp_path):
    """Qwen2ForRewardModel (Qwen2.5-Math-RM style): the backbone, then ``score`` = Linear -> ReLU -> Linear on every
    token; reward = sigmoid of its one label, raw with use_activation=False."""
    torch.manual_seed(0)
    cfg = make_config("Qwen2ForCausalLM")
    backbone = _randomized(transformers.Qwen2Model(cfg), False)
    score = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    tensors = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    tensors.update({f"score.{k}": v.contiguous() for k, v in score.state_dict().items()})
    save_file(tensors, os.path.join(tmp_path, "model.safetensors"))
    with open(os.path.join(tmp_path, "config.json"), "w") as f:
        json.dump({**cfg.to_dict(), "architectures": ["Qwen2ForRewardModel"]}, f)
    llm = LLM(str(tmp_path), **ENGINE)
    assert llm.runner_type == "pooling" and llm.supported_tasks == ("token_classify",)
    with torch.no_grad():
        logits = score(backbone(torch.tensor([IDS])).last_hidden_state[0]).numpy()
    out = llm.reward({"prompt_token_ids": IDS}, use_tqdm=False)[0].outputs.data
    np.testing.assert_allclose(out, 1.0 / (1.0 + np.exp(-logits)), atol=1e-5)
    raw = llm.reward({"prompt_token_ids": IDS}, pooling_params=PoolingParams(use_activation=False),
                     use_tqdm=False)[0].outputs.data
    np.testing.assert_allclose(raw, logits, atol=1e-4)
    dummy = LLM(str(tmp_path), load_format="dummy", **ENGINE)  # random weights of the real shapes, head too
    assert dummy.reward({"prompt_token_ids": IDS}, use_tqdm=False)[0].outputs.data.shape == (len(IDS), 1)


def _config(arch: str, **extra) -> dict:
    return {"architectures": [arch], "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "vocab_size": 256, "intermediate_size": 128, **extra}


@pytest.mark.parametrize("hf, match", [
    (_config("BloomForSequenceClassification"), "'BloomForSequenceClassification' is not supported"),
    (_config("Gemma3TextModel", model_type="gemma3_text", use_bidirectional_attention=True), "bidirectional"),
    (_config("Qwen2Model", model_type="qwen2", is_causal=False), "bidirectional"),
    ({"architectures": ["Gemma3ForSequenceClassification"], "text_config": _config("Gemma3TextModel")},
     "multimodal"),
])
def test_unservable_decoders_are_named(tmp_path, hf, match):
    with pytest.raises(ValueError, match=match):
        pooling_model_info(str(tmp_path), hf)


@pytest.mark.parametrize("arch, tasks", [
    ("LlamaEmbeddingModel", ("embed", "token_embed")), ("MistralForTextEncoding", ("embed", "token_embed")),
    ("Qwen2ClassificationModel", ("classify", "token_classify")), ("LlamaForRewardModeling", ("token_classify",)),
    ("Qwen3RewardModel", ("token_classify",)), ("Qwen2ForRewardModel", ("token_classify",)),
])
def test_vllm_suffix_conversions(tmp_path, arch, tasks):
    """vLLM's suffix defaults: any served family under these names is converted as vLLM converts it."""
    info = pooling_model_info(str(tmp_path), _config(arch, num_labels=2))
    assert info.tasks == tasks and not info.encoder
    assert resolve_runner("auto", {"architectures": [arch]}) == "pooling"


def test_generate_runner_refuses_pooling_forms():
    for arch in ("GPT2ForSequenceClassification", "OPTModel", "GemmaModel"):
        with pytest.raises(ValueError, match="is a pooling model"):
            resolve_runner("generate", {"architectures": [arch]})
        assert resolve_runner("auto", {"architectures": [arch]}) == "pooling"
    assert resolve_runner("generate", {"architectures": ["GPT2LMHeadModel"]}) == "generate"
