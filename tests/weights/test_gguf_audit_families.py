"""Every family both llama.cpp's converter and jaxllm serve, as vLLM loads a GGUF: ``LLM(model=file.gguf,
tokenizer=HF_DIR)``. A tiny random HF checkpoint is written to GGUF the way convert_hf_to_gguf.py writes it
(tests/gguf_files.py: the gguf package's name map, llama's q/k permutation, Gemma's norm + 1, MoE experts stacked;
Mistral and Mixtral become llama.cpp "llama" files; also Mixtral's first, per-expert layout, yarn and Gemma 3's
local rope base). The float32 file must give transformers' logits on the HF checkpoint (1e-4 relative), the
same greedy tokens, the same logits on 2 devices (tensor / expert parallel), and with ``hf_config_path`` the base
model's config; transformers' own GGUF reader is a second reference where it reads the family (llama, qwen2).
"""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_files import write_hf_as_gguf
from hf_models import hf_greedy, hf_logits, relative_error, save_tiny_model, save_tokenizer_with_template

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.engine_args import EngineArgs
from jaxllm.load import locate_model
from jaxllm.weights.gguf import GGUFCheckpoint

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
EXPERTS = {"num_local_experts": 4, "num_experts_per_tok": 2}
# HF architecture, config overrides (vocab 512 holds the test tokenizer's 421 tokens)
CASES = {
    "llama": ("LlamaForCausalLM", {"head_dim": 16, "attention_bias": True}),
    "mistral": ("MistralForCausalLM", {"head_dim": 32}),
    "qwen2": ("Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 32, "tie_word_embeddings": True}),
    "gemma": ("GemmaForCausalLM", {"head_dim": 16}),
    "gemma2": ("Gemma2ForCausalLM", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 6,
                                     "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
    "gemma3": ("Gemma3ForCausalLM", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 5,
                                     "num_hidden_layers": 3, "sliding_window_pattern": 3}),
    "gemma3-rope": ("Gemma3ForCausalLM", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 5,
                                          "rope_local_base_freq": 20000.0,
                                          "rope_scaling": {"rope_type": "linear", "factor": 4.0}}),
    "qwen2-yarn": ("Qwen2ForCausalLM", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                         "original_max_position_embeddings": 128}}),
    "phi3": ("Phi3ForCausalLM", SPECIAL),
    "olmo2": ("Olmo2ForCausalLM", SPECIAL),
    "mixtral": ("MixtralForCausalLM", {**EXPERTS, "intermediate_size": 32}),
    "mixtral-per-expert": ("MixtralForCausalLM", {**EXPERTS, "intermediate_size": 32}),
    "qwen3moe": ("Qwen3MoeForCausalLM", {**EXPERTS, "moe_intermediate_size": 32, "norm_topk_prob": True,
                                         "head_dim": 16}),
    "qwen2moe": ("Qwen2MoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                         "shared_expert_intermediate_size": 48}),
    "olmoe": ("OlmoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 32,
                                   "rms_norm_eps": 1e-5}),
    "smollm3": ("SmolLM3ForCausalLM", {**SPECIAL, "num_hidden_layers": 4}),  # layer 3 without rope
    "starcoder2": ("Starcoder2ForCausalLM", {**SPECIAL, "norm_epsilon": 1e-4}),
    "command-r": ("CohereForCausalLM", {**SPECIAL, "logit_scale": 0.25}),
    "command-r-plus": ("CohereForCausalLM", {**SPECIAL, "use_qk_norm": True, "layer_norm_eps": 1e-4}),
    "granite": ("GraniteForCausalLM", {"embedding_multiplier": 3.0, "residual_multiplier": 0.5,
                                       "attention_multiplier": 0.2, "logits_scaling": 4.0}),
}
# The families LLM.generate runs end to end (each GGUF-specific path once: q/k permutation, norm + 1 and
# per-layer windows, fused projections, stacked experts); every family's logits are checked.
GENERATE = ("llama", "gemma3", "phi3", "mixtral", "qwen3moe")
PROMPTS = ["Hello world, the quick brown fox", "emoji 😀 family"]


_BUILT: dict[str, tuple] = {}


def family(name: str, tmp_path_factory):
    """(transformers model, HF folder with the test tokenizer, GGUF path) of case ``name``, built once."""
    if name not in _BUILT:
        arch, overrides = CASES[name]
        root = tmp_path_factory.mktemp(name)
        hf = save_tiny_model(root / "hf", arch, vocab_size=512, **overrides)
        save_tokenizer_with_template(root / "hf")
        write_hf_as_gguf(root / "model.gguf", root / "hf", hf.config, per_expert=name.endswith("per-expert"))
        _BUILT[name] = hf, root / "hf", root / "model.gguf"
    return _BUILT[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_transformers(name, tmp_path_factory):
    hf, _, path = family(name, tmp_path_factory)
    expected_arch = CASES[name][0].replace("Mistral", "Llama")  # llama.cpp stores Mistral as llama
    assert GGUFCheckpoint(path).hf_config["architectures"] == [expected_arch]
    scaling = hf.config.rope_parameters.get("full_attention", hf.config.rope_parameters)
    rope = GGUFCheckpoint(path).hf_config.get("rope_scaling", {"rope_type": "default"})
    assert rope["rope_type"] == scaling.get("rope_type", "default")
    ids = np.random.RandomState(1).randint(0, hf.config.vocab_size, (2, 20)).astype(np.int32)
    assert relative_error(np.asarray(jaxllm.load_model(path)(ids)), hf_logits(hf, ids)) <= 1e-4


@pytest.mark.parametrize("name", GENERATE)
def test_generate_with_hf_tokenizer_matches_transformers(name, tmp_path_factory):
    hf, hf_dir, path = family(name, tmp_path_factory)
    llm = LLM(str(path), tokenizer=str(hf_dir), max_num_seqs=2, max_num_batched_tokens=32, enforce_eager=True)
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert len(llm.get_tokenizer()) == len(tok)  # the HF folder's tokenizer (the file has none)
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True), use_tqdm=False)
    for prompt, out in zip(PROMPTS, outs):
        ids = tok.encode(prompt)
        assert out.prompt_token_ids == ids
        assert list(out.outputs[0].token_ids) == hf_greedy(hf, ids, 6), (name, prompt)


@pytest.mark.parametrize("name", ["llama", "mistral", "qwen2"])
def test_transformers_gguf_reader_agrees(name, tmp_path):
    """transformers reads these families' GGUF files itself (its own name map and q/k un-permutation)."""
    arch, overrides = CASES[name]
    # transformers' reader builds llama without biases (it reads no attention_bias from the file)
    hf = save_tiny_model(tmp_path, arch, vocab_size=512, **{**overrides, "attention_bias": False})
    write_hf_as_gguf(tmp_path / "m.gguf", tmp_path, hf.config)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    ids = np.random.RandomState(2).randint(0, 512, (2, 16)).astype(np.int32)
    ours = np.asarray(jaxllm.load_model(tmp_path / "m.gguf")(ids))
    assert relative_error(ours, hf_logits(ref.eval(), ids)) <= 1e-4


@pytest.mark.parametrize("name,expert_parallel", [("llama", False), ("mixtral", True), ("qwen3moe", False)])
def test_tensor_parallel_matches_transformers(name, expert_parallel, tmp_path_factory):
    """A GGUF's tensors placed shard by shard on 2 devices (experts split per expert, then sharded)."""
    hf, _, path = family(name, tmp_path_factory)
    model = jaxllm.load_model(path, tensor_parallel_size=2, enable_expert_parallel=expert_parallel)
    ids = np.random.RandomState(3).randint(0, hf.config.vocab_size, (2, 12)).astype(np.int32)
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 1e-4


def test_hf_config_path_gives_a_gguf_its_base_models_config(tmp_path):
    """vLLM's ``hf_config_path``: the base model's config.json instead of the file's metadata. llama.cpp stores
    Mistral as llama and drops its sliding window; with the HF folder's config the window (and the Mistral
    architecture) come back and logits past the window match transformers."""
    hf = save_tiny_model(tmp_path / "hf", "MistralForCausalLM", vocab_size=512, sliding_window=6)
    save_tokenizer_with_template(tmp_path / "hf")
    path = tmp_path / "m.gguf"
    write_hf_as_gguf(path, tmp_path / "hf", hf.config)
    ids = np.random.RandomState(6).randint(0, 512, (2, 20)).astype(np.int32)
    ref = hf_logits(hf, ids)
    assert relative_error(np.asarray(jaxllm.load_model(path)(ids)), ref) > 1e-3  # the file alone: no window
    model = jaxllm.load_model(path, hf_config_path=str(tmp_path / "hf"))
    assert relative_error(np.asarray(model(ids)), ref) <= 1e-4
    cfg = locate_model(EngineArgs.from_kwargs({"model": str(path), "hf_config_path": str(tmp_path / "hf")})).config
    assert cfg.architecture == "MistralForCausalLM" and cfg.sliding_windows == (6, 6)
