"""DeepSeek-V2 / V3 GGUF files (llama.cpp's deepseek2) written as convert_hf_to_gguf.py writes them
(tests/gguf_files_deepseek.py: kv_b_proj split into attn_k_b / attn_v_b, or whole as older converters kept it;
experts stacked; V3's correction bias as exp_probs_b; YaRN's mscale as the log multiplier): fp32 logits within
1e-4 of transformers on the HF checkpoint, greedy tokens, and a file lacking one half of kv_b refused."""

from __future__ import annotations

import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from deepseek_models import V2, V3, YARN, save_deepseek
from gguf_files_archs import assert_generate_matches, assert_gguf_matches, copy_gguf
from gguf_files_deepseek import write_deepseek_as_gguf
from hf_models import save_tokenizer_with_template

from jaxllm.weights.gguf import GGUFCheckpoint

CASES = {
    "v2-qlora-greedy": (V2, {}, True),
    "v2-qproj-group-limited-kv-b-whole": (V2, {"q_lora_rank": None, "topk_method": "group_limited_greedy"}, False),
    # the file holds mscale_all_dim only; the released V2 / V3 configs have mscale == mscale_all_dim
    "v3-yarn": (V3, {"rope_parameters": {**YARN, "mscale": YARN["mscale_all_dim"], "beta_fast": 16.0, "beta_slow": 2.0}, "n_shared_experts": 2, "norm_topk_prob": True,
                     "routed_scaling_factor": 2.5}, True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_greedy_match_transformers(name, tmp_path):
    arch, overrides, split = CASES[name]
    hf = save_deepseek(tmp_path / "hf", arch, **overrides)
    path = tmp_path / "m.gguf"
    write_deepseek_as_gguf(path, tmp_path / "hf", hf.config, split_kv_b=split)
    assert_gguf_matches(path, hf, arch)


def test_generate_with_hf_tokenizer_matches_transformers(tmp_path):
    """``LLM(file.gguf, tokenizer=HF_DIR)`` of a V3 file: greedy tokens as transformers' on the HF checkpoint."""
    hf = save_deepseek(tmp_path / "hf", V3, vocab_size=512)
    save_tokenizer_with_template(tmp_path / "hf")
    write_deepseek_as_gguf(tmp_path / "m.gguf", tmp_path / "hf", hf.config)
    assert_generate_matches(tmp_path / "m.gguf", tmp_path / "hf", hf)


def test_one_half_of_kv_b_missing_is_named(tmp_path):
    hf = save_deepseek(tmp_path / "hf", V2)
    write_deepseek_as_gguf(tmp_path / "m.gguf", tmp_path / "hf", hf.config)
    copy_gguf(tmp_path / "m.gguf", tmp_path / "half.gguf", drop=("blk.1.attn_v_b.weight",))
    with pytest.raises(ValueError, match=r"blk\.1\.attn_k_b\.weight.*blk\.1\.attn_v_b\.weight"):
        GGUFCheckpoint(tmp_path / "half.gguf")
