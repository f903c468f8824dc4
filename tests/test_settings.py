"""The settings object (jaxllm.engine_args.EngineArgs) and the one reader of the environment (jaxllm.envs)."""

from __future__ import annotations

import pathlib
import re

import pytest

from jaxllm import engine_args, envs
from jaxllm.engine_args import EngineArgs
from jaxllm.unsupported_args import UNSUPPORTED

ROOT = pathlib.Path(__file__).resolve().parents[1]
_ENV_READ = re.compile(r"os\.environ|os\.getenv|\bgetenv\(|\benviron\b")


def test_only_envs_reads_the_environment():
    """Every os.environ / getenv use in the library (jaxllm/ and ops/) is in jaxllm/envs.py."""
    offenders = []
    for folder in ("jaxllm", "ops"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "jaxllm" / "envs.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _ENV_READ.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "environment read outside jaxllm/envs.py:\n" + "\n".join(offenders)


def test_kernel_choices_match_the_ops():
    from jaxllm.ops import paged_attention, quant_matmul
    from jaxllm.ops.paged_attention.pallas_attention import FP8_DOTS
    from jaxllm.ops.quant_matmul.pallas_triton import VARIANTS

    assert set(engine_args.ATTENTION_BACKENDS) == set(paged_attention.IMPLEMENTATIONS)
    assert set(engine_args.QUANT_MATMUL_IMPLS) == set(quant_matmul.dispatch.IMPLEMENTATIONS)
    from jaxllm.ops.grouped_matmul import IMPLEMENTATIONS as GROUPED_MATMUL_IMPLS

    assert set(engine_args.MOE_MATMUL_IMPLS) == set(GROUPED_MATMUL_IMPLS)
    assert set(engine_args.INT4_KERNEL_VARIANTS) == set(VARIANTS)
    assert set(engine_args.ATTENTION_FP8_DOTS) == set(FP8_DOTS)
    assert set(engine_args.KV_CACHE_DTYPES) == set(paged_attention.KV_CACHE_DTYPES)


def test_every_field_and_variable_is_in_the_settings_doc():
    text = (ROOT / "docs" / "settings.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (`\w*`|) \|", text, re.MULTILINE))
    assert set(EngineArgs.__dataclass_fields__) <= set(rows)
    for var, keyword in envs.ENV_VARS.items():
        assert rows[keyword] == f"`{var}`", keyword


def test_every_env_var_names_a_field():
    fields = set(EngineArgs.__dataclass_fields__)
    assert set(envs.ENV_VARS.values()) <= fields
    assert not set(UNSUPPORTED) & fields, "a name is both supported and refused"


def test_unknown_name_is_a_type_error_known_vllm_name_a_value_error():
    with pytest.raises(TypeError, match="not_a_vllm_argument"):
        EngineArgs.from_kwargs({"not_a_vllm_argument": 1})
    with pytest.raises(ValueError, match="pipeline_parallel_size=2 is not supported: pipeline parallelism"):
        EngineArgs.from_kwargs({"pipeline_parallel_size": 2})
    with pytest.raises(ValueError, match="fully_sharded_loras=True is not supported: adapters"):
        EngineArgs.from_kwargs({"fully_sharded_loras": True})
    # the values that ask for nothing are accepted, as a ported script passes them
    EngineArgs.from_kwargs({"pipeline_parallel_size": 1, "enable_lora": False, "speculative_config": None,
                            "limit_mm_per_prompt": {}, "cpu_offload_gb": 0})


def test_env_sets_the_default_and_the_keyword_wins(monkeypatch):
    monkeypatch.setenv("JAXLLM_PA_DECODE_SPLITS", "2")
    monkeypatch.setenv("JAXLLM_ATTENTION_IMPL", "reference")
    args = EngineArgs.from_kwargs({})
    assert (args.attention_decode_splits, args.attention_backend) == (2, "reference")
    args = EngineArgs.from_kwargs({"attention_decode_splits": 4, "attention_backend": "chunked"})
    assert (args.attention_decode_splits, args.attention_backend) == (4, "chunked")
    monkeypatch.setenv("JAXLLM_PA_FP8_DOT", "bf16")
    with pytest.raises(ValueError, match="JAXLLM_PA_FP8_DOT='bf16'"):
        EngineArgs.from_kwargs({})
    monkeypatch.delenv("JAXLLM_PA_FP8_DOT")
    monkeypatch.setenv("JAXLLM_LOAD_INFLIGHT_BYTES", "lots")
    with pytest.raises(ValueError, match="JAXLLM_LOAD_INFLIGHT_BYTES='lots'"):
        EngineArgs.from_kwargs({})
    monkeypatch.setenv("JAXLLM_LOAD_INFLIGHT_BYTES", "0")
    assert EngineArgs.from_kwargs({}).inflight_bytes == 0


@pytest.mark.parametrize("name, value, match", [
    ("attention_backend", "FLASH_ATTN", "attention_backend='FLASH_ATTN'"),
    ("fp8_activations", "static", "fp8_activations='static'"),
    ("max_logprobs", -2, "max_logprobs must be >= -1, got -2"),
    ("enable_chunked_prefill", False, "enable_chunked_prefill=False"),
    ("distributed_executor_backend", "ray", "distributed_executor_backend='ray'"),
    ("scheduling_policy", "lifo", "scheduling_policy='lifo'"),
    ("logprobs_mode", "processed", "logprobs_mode='processed'"),
    ("config_format", "mistral", "config_format='mistral'"),
    ("compilation_config", 0, "compilation_config level=0"),
    ("compilation_config", {"cudagraph_capture_sizes": [1, 2]}, "cudagraph_capture_sizes"),
    ("swap_space", -1, "swap_space=-1"),
    ("swap_space", 10**9, "swap_space=1000000000"),
    ("preemption_mode", "lazy", "preemption_mode='lazy'"),
    ("runner", "embedding", "runner='embedding'"),
    ("tokenizer_mode", "custom", "tokenizer_mode='custom'"),
])
def test_bad_values_name_the_keyword(name, value, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        EngineArgs.from_kwargs({name: value})


def test_host_tier_keywords():
    assert EngineArgs.from_kwargs({"swap_space": 8, "preemption_mode": "swap"}).swap_space == 8
    with pytest.raises(ValueError, match="preemption_mode='swap' needs swap_space > 0"):
        EngineArgs.from_kwargs({"swap_space": 0, "preemption_mode": "swap"})
    with pytest.raises(ValueError, match="host_prefix_cache=True needs"):
        EngineArgs.from_kwargs({"host_prefix_cache": True, "enable_prefix_caching": False})


def test_compilation_config_maps_cache_dir(monkeypatch):
    monkeypatch.delenv("JAXLLM_CACHE_DIR", raising=False)
    assert EngineArgs.from_kwargs({"compilation_config": {"level": 3, "cache_dir": "/tmp/x"}}).cache_dir == "/tmp/x"
    assert EngineArgs.from_kwargs({"compilation_config": 3}).cache_dir.endswith("jaxllm/xla")
    assert EngineArgs.from_kwargs({"compilation_cache_dir": ""}).cache_dir is None
    monkeypatch.setenv("JAXLLM_CACHE_DIR", "0")
    assert EngineArgs.from_kwargs({}).cache_dir is None


def test_config_overrides_merge_rope_and_hf_overrides():
    args = EngineArgs.from_kwargs({"rope_theta": 5e5, "hf_overrides": {"max_position_embeddings": 64}})
    assert args.config_overrides() == {"rope_theta": 5e5, "max_position_embeddings": 64}
    with pytest.raises(TypeError, match="hf_overrides"):
        EngineArgs.from_kwargs({"hf_overrides": "max_position_embeddings=64"})


def test_attention_config_backend_is_attention_backend():
    assert EngineArgs.from_kwargs({"attention_config": {"backend": "chunked"}}).attention_backend == "chunked"
    with pytest.raises(ValueError, match="attention_backend='FLASH_ATTN'"):
        EngineArgs.from_kwargs({"attention_config": {"backend": "FLASH_ATTN"}})
    with pytest.raises(ValueError, match="attention_config\\['use_cudnn_prefill'\\]"):
        EngineArgs.from_kwargs({"attention_config": {"use_cudnn_prefill": True}})
    with pytest.raises(ValueError, match="contradicts"):
        EngineArgs.from_kwargs({"attention_config": {"backend": "chunked"}, "attention_backend": "reference"})
