"""Shared pytest setup: tests marked ``@pytest.mark.gpu`` run only where jax sees a GPU."""

from __future__ import annotations

import functools
import os

import pytest

# Four host "devices" so tensor-parallel tests run on the CPU (must be set before jax starts).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")


@functools.cache
def jax_has_gpu() -> bool:
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:  # noqa: BLE001 - no usable backend means no GPU
        return False


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU visible to jax (skipped elsewhere)")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not jax_has_gpu():
        skip = pytest.mark.skip(reason="needs a GPU visible to jax")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _collect_after_gpu_test(request):
    """After a GPU test, collect the engines it dropped so that their device buffers (KV caches sized by
    gpu_memory_utilization) return to the allocator before the next test allocates."""
    yield
    if "gpu" in request.keywords:
        import gc

        gc.collect()


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """After each test module, drop jax's caches of compiled programs (the engines a module built are gone by
    then): every XLA:CPU executable keeps its JIT-compiled code mapped, and one pytest process that keeps all of
    them would run into the kernel's limit on memory mappings (vm.max_map_count) late in the suite."""
    yield
    import sys

    if "jax" in sys.modules:
        import gc

        gc.collect()
        sys.modules["jax"].clear_caches()
