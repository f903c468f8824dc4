"""The sampler's filters stay cheap, checked on the CPU without timing: XLA's cost of the sampler program the
runner serves each filter with (scripts/sampler_cost.py, the GPU's code paths) against plain temperature sampling.
A filter that starts to read the logits more often, or to evaluate the Gumbel noise or exp over the whole
vocabulary more than once, or that is served by the all-filters variant, shows up here as a broken budget."""

import importlib.util
import pathlib

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "sampler_cost", pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sampler_cost.py")
sampler_cost = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sampler_cost)

S, V = 32, 32768
# bytes accessed / plain's; the processors' passes (allowed mask, bias scatter) are in plain's bytes too
BYTES_BUDGET = {"min_p=0.05": 1.2, "top_k=50": 1.85, "top_p=0.95": 1.85, "top_k=20+top_p=0.95+min_p=0.05": 1.95}
EXTRA_PASSES = {"min_p=0.05": 1, "top_k=50": 3, "top_p=0.95": 4, "top_k=20+top_p=0.95+min_p=0.05": 4}


@pytest.fixture(scope="module")
def plain():
    return sampler_cost.program_cost(sampler_cost.SETTINGS["plain"], S, V)


@pytest.mark.parametrize("name", list(BYTES_BUDGET))
def test_filtered_sampler_stays_within_its_budget(plain, name):
    cost = sampler_cost.program_cost(sampler_cost.SETTINGS[name], S, V)
    assert cost["bytes"] <= BYTES_BUDGET[name] * plain["bytes"], (cost, plain)
    assert cost["full_passes"] <= plain["full_passes"] + EXTRA_PASSES[name], (cost, plain)
    # one noise evaluation per token (2 logs) as plain sampling, plus at most one exp for top-p's mass
    extra = 0.0 if name == "min_p=0.05" else 1.0 if "top_p" in name else 0.1
    assert cost["transcendentals"] <= plain["transcendentals"] + (extra + 0.1) * S * V, (cost, plain)
