"""The host tier against XLA's pinned host pool: on a GPU, a ``swap_space`` larger than the pool
(``XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB``, 64 GiB unset) is a ValueError when the args are resolved, before the
weights load, naming both values and the variable; the CPU has no such pool."""

from __future__ import annotations

import re

import pytest

from jaxllm import envs, host_memory
from jaxllm.engine_args import EngineArgs

LIMIT = "XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB"
PREALLOCATE = "XLA_PJRT_GPU_HOST_MEMORY_PREALLOCATE"


@pytest.fixture
def roomy_host(monkeypatch):
    """Plenty of free host memory, so only the pinned pool can refuse a swap_space; XLA's variables unset."""
    monkeypatch.setattr(host_memory, "available_host_bytes", lambda: 2**40)
    monkeypatch.delenv(LIMIT, raising=False)
    monkeypatch.delenv(PREALLOCATE, raising=False)
    return monkeypatch


def _resolve(platform: str, num_processes: int = 1, **kwargs):
    return EngineArgs.from_kwargs(kwargs).resolve(platform, 2048, num_processes=num_processes)


@pytest.mark.parametrize("env, want", [({}, 64), ({PREALLOCATE: "true"}, 16), ({PREALLOCATE: "0"}, 64),
                                       ({LIMIT: "128"}, 128), ({LIMIT: "8", PREALLOCATE: "1"}, 8)])
def test_pool_size_follows_xla_defaults_and_variables(roomy_host, env, want):
    for name, value in env.items():
        roomy_host.setenv(name, value)
    assert envs.gpu_pinned_host_limit_gib() == want


def test_unparsable_limit_names_the_variable(roomy_host):
    roomy_host.setenv(LIMIT, "lots")
    with pytest.raises(ValueError, match=re.escape(f"{LIMIT}='lots'")):
        envs.gpu_pinned_host_limit_gib()


def test_gpu_swap_space_above_the_pool_is_refused(roomy_host):
    with pytest.raises(ValueError) as err:
        _resolve("gpu", swap_space=80)
    message = str(err.value)
    assert "swap_space=80" in message and "64 GiB" in message and f"{LIMIT}=80" in message
    assert _resolve("gpu", swap_space=64).swap_space == 64  # at the limit: fits


def test_the_variable_raises_the_pool(roomy_host):
    roomy_host.setenv(LIMIT, "128")
    assert _resolve("gpu", swap_space=80).swap_space == 80
    roomy_host.setenv(LIMIT, "2")
    with pytest.raises(ValueError, match=re.escape("limit of 2 GiB")):
        _resolve("gpu", swap_space=3, preemption_mode="swap")


def test_no_tier_or_no_gpu_means_no_check(roomy_host):
    roomy_host.setenv(LIMIT, "1")
    assert _resolve("cpu", swap_space=8).swap_space == 8  # the CPU backend has no pinned pool
    assert _resolve("gpu", swap_space=8, preemption_mode="recompute").swap_space == 8  # no tier is made
    with pytest.raises(ValueError, match="pinned host memory limit"):
        _resolve("gpu", swap_space=8, preemption_mode="recompute", host_prefix_cache=True)


def test_data_parallel_replicas_of_one_process_share_the_pool(roomy_host):
    with pytest.raises(ValueError, match=re.escape("swap_space=40 GiB for each of 2 data-parallel replicas (80 GiB")):
        _resolve("gpu", swap_space=40, data_parallel_size=2)
    assert _resolve("gpu", num_processes=2, swap_space=40, data_parallel_size=2).swap_space == 40


@pytest.mark.gpu
def test_llm_refuses_before_the_weights_load(roomy_host, tmp_path):
    """GPU only: LLM(...) raises at start-up; the model is never built, so nothing reaches the device."""
    from hf_models import save_tiny_model

    import jaxllm.load
    from jaxllm import LLM

    save_tiny_model(tmp_path, "LlamaForCausalLM", vocab_size=256, eos_token_id=0, bos_token_id=None)
    roomy_host.setenv(LIMIT, "1")

    def build_model(*args, **kwargs):
        raise AssertionError("the weights were loaded before the pinned host limit was checked")

    roomy_host.setattr(jaxllm.load, "build_model", build_model)
    with pytest.raises(ValueError, match=re.escape(f"swap_space=2 GiB is more than XLA's pinned host memory "
                                                   f"limit of 1 GiB ({LIMIT})")):
        LLM(str(tmp_path), swap_space=2, preemption_mode="swap", skip_tokenizer_init=True)
