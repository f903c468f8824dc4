"""The loader's bound on host->device copies in flight (``InFlightCopies``, ``load_inflight_bytes`` /
``JAXLLM_LOAD_INFLIGHT_BYTES``).

Unit tests use fake arrays that record ``block_until_ready`` calls; the loader tests build a tiny random HF
checkpoint and check that every placed weight goes through the bound and that the weights do not depend on it.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from hf_models import save_tiny_model

import jaxllm
from jaxllm.weights import loader
from jaxllm.weights.inflight import DEFAULT_INFLIGHT_BYTES, InFlightCopies

INFLIGHT_BYTES_ENV = "JAXLLM_LOAD_INFLIGHT_BYTES"


class FakeArray:
    """Has ``nbytes`` and records, in the shared ``log``, when it is waited on."""

    def __init__(self, name: str, nbytes: int, log: list):
        self.name, self.nbytes, self._log = name, nbytes, log

    def block_until_ready(self):
        self._log.append(self.name)
        return self


def test_first_array_waited_on_when_second_goes_over_budget():
    log: list = []
    inflight = InFlightCopies(100)
    a, b = FakeArray("a", 60, log), FakeArray("b", 60, log)
    assert inflight.add(a) is a
    assert log == [] and inflight.bytes_in_flight == 60
    assert inflight.add(b) is b
    assert log == ["a"] and inflight.bytes_in_flight == 60


def test_oldest_first_until_under_budget():
    log: list = []
    inflight = InFlightCopies(100)
    for name in "abc":
        inflight.add(FakeArray(name, 40, log))
    assert log == ["a"]  # 120 > 100: a; then 80
    inflight.add(FakeArray("d", 90, log))  # 170: b (130), c (90)
    assert log == ["a", "b", "c"] and inflight.bytes_in_flight == 90


def test_exactly_at_budget_is_not_waited_on_and_an_oversized_array_is():
    log: list = []
    inflight = InFlightCopies(100)
    inflight.add(FakeArray("a", 100, log))
    assert log == []
    inflight.add(FakeArray("big", 0, log), nbytes=0)
    assert log == []
    inflight = InFlightCopies(100)
    inflight.add(FakeArray("huge", 101, log))
    assert log == ["huge"] and inflight.bytes_in_flight == 0


def test_nbytes_override_counts_instead_of_array_nbytes():
    log: list = []
    inflight = InFlightCopies(100)
    inflight.add(FakeArray("q", 10, log), nbytes=80)
    inflight.add(FakeArray("r", 10, log), nbytes=30)
    assert log == ["q"] and inflight.bytes_in_flight == 30


def test_zero_budget_waits_on_every_array():
    log: list = []
    inflight = InFlightCopies(0)
    for name in "abc":
        inflight.add(FakeArray(name, 1, log))
    assert log == ["a", "b", "c"]


@pytest.mark.parametrize("bad", [-1, 1.5, "100"])
def test_bad_budget_argument(bad):
    with pytest.raises(ValueError, match="budget_bytes"):
        InFlightCopies(bad)


def test_default_budget():
    assert InFlightCopies().budget_bytes == DEFAULT_INFLIGHT_BYTES == 2 << 30
    assert InFlightCopies(7).budget_bytes == 7


# --- through the loader ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama")
    save_tiny_model(path, "LlamaForCausalLM")
    return path


@pytest.fixture
def recorded(monkeypatch):
    """Every InFlightCopies the loader makes, with the (array, nbytes) it was given and the arrays waited on."""
    made: list = []

    class Recording(InFlightCopies):
        def __init__(self, budget_bytes=DEFAULT_INFLIGHT_BYTES):
            super().__init__(budget_bytes)
            self.added: list = []
            self.waited: list = []
            made.append(self)

        def add(self, array, nbytes=None):
            self.added.append((array, array.nbytes if nbytes is None else nbytes))
            super().add(_Spy(array, self.waited), nbytes)
            return array

    monkeypatch.setattr(loader, "InFlightCopies", Recording)
    return made


class _Spy:
    """Wraps a jax.Array: records that it was waited on, then really waits."""

    def __init__(self, array, log: list):
        self.array, self.nbytes, self._log = array, array.nbytes, log

    def block_until_ready(self):
        self._log.append(self.array)
        return self.array.block_until_ready()


def _params(model) -> dict:
    return {path: np.asarray(jax.device_get(v.get_value())) for path, v in nnx.to_flat_state(nnx.state(model))}


def test_loader_registers_every_placed_weight(checkpoint, recorded):
    model = jaxllm.load_model(checkpoint, "float32", load_inflight_bytes=0)
    (inflight,) = recorded
    assert inflight.budget_bytes == 0
    params = _params(model)
    added = {id(a) for a, _ in inflight.added}
    # fused q/k/v and gate/up make fewer placed arrays than checkpoint tensors; every model parameter was placed
    kv_scale_free = [p for p in params if loader.KV_SCALE_PARAM not in p]
    assert len(inflight.added) == len(kv_scale_free)
    assert all(a.nbytes == n for a, n in inflight.added)
    assert {id(a) for a in inflight.waited} == added  # budget 0: each one waited on


@pytest.mark.parametrize("tp", [1, 2])
def test_budget_does_not_change_the_weights(checkpoint, monkeypatch, tp):
    """Only the budget differs (on the CPU the copies finish at once, so this guards the bookkeeping, not buffer
    lifetimes)."""
    monkeypatch.setenv(INFLIGHT_BYTES_ENV, "0")  # the variable sets the default
    waited_each = _params(jaxllm.load_model(checkpoint, "float32", tensor_parallel_size=tp))
    monkeypatch.setenv(INFLIGHT_BYTES_ENV, str(1 << 40))
    never_waited = _params(jaxllm.load_model(checkpoint, "float32", tensor_parallel_size=tp))
    assert waited_each.keys() == never_waited.keys()
    for path, value in waited_each.items():
        np.testing.assert_array_equal(value, never_waited[path], err_msg=str(path))


def test_quantized_weight_counts_its_float32_input(checkpoint, recorded):
    jaxllm.load_model(checkpoint, "float32", quantization="int8", load_inflight_bytes=0)
    (inflight,) = recorded
    int8 = [(a, n) for a, n in inflight.added if a.dtype == np.int8]
    assert int8, "no int8 qweight was registered"
    assert all(n == 4 * a.nbytes for a, n in int8)  # counted as the float32 weight fed from the host


def test_bad_env_budget_fails_the_load(checkpoint, monkeypatch):
    monkeypatch.setenv(INFLIGHT_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match=rf"{INFLIGHT_BYTES_ENV}='lots'"):
        jaxllm.load_model(checkpoint, "float32")


def test_bad_keyword_budget_fails_before_loading(checkpoint):
    with pytest.raises(ValueError, match="load_inflight_bytes must be >= 0"):
        jaxllm.load_model(checkpoint, "float32", load_inflight_bytes=-1)
