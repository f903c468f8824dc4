"""The sampler's filters stay cheap, checked on the CPU without timing: XLA's cost of the sampler program the
runner serves each filter with (scripts/sampler_cost.py, the GPU's code paths) against plain temperature sampling.
A filter that starts to read the logits more often, or to evaluate the Gumbel noise or exp over the whole
vocabulary more than once, or to add arithmetic per element, or that is served by the all-filters variant, shows
up here as a broken budget."""

import importlib.util
import pathlib

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "sampler_cost", pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sampler_cost.py")
sampler_cost = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sampler_cost)

S, V = 32, 32768
# setting: (bytes accessed / plain's, [S, V] passes over plain's, transcendentals and flops per [S, V] element over
# plain's). Plain sampling: the processors' passes (allowed mask, bias scatter, non-finite check) and one Gumbel-max
# pass (2 logs per element). CPU figures: the GPU fuses the race's elementwise producer into its reduction.
BUDGET = {
    "min_p=0.05": (1.15, 1, 0.0, 1.5),  # one max pass
    "top_k=50": (1.3, 1, -1.9, -38.0),  # the top values only: no noise over the vocabulary
    "top_k=20+top_p=0.95+min_p=0.05": (1.3, 1, -1.9, -38.0),
    # the race (z materialised on the CPU) and the membership pass: its exp and one running sum per tested record
    "top_p=0.95": (1.55, 2, 1.1, 15.0),
    "top_k=100+top_p=0.95": (1.55, 2, 1.1, 15.0),
    "top_p=0.95+min_p=0.05": (1.65, 3, 1.1, 16.5),  # and a max pass for min_p (TOP_P_MIN_P_CONFIG)
}


@pytest.fixture(scope="module")
def plain():
    return sampler_cost.program_cost(sampler_cost.SETTINGS["plain"], S, V)


@pytest.mark.parametrize("name", list(BUDGET))
def test_filtered_sampler_stays_within_its_budget(plain, name):
    cost = sampler_cost.program_cost(sampler_cost.SETTINGS[name], S, V)
    bytes_ratio, passes, transcendentals, flops = BUDGET[name]
    assert cost["bytes"] <= bytes_ratio * plain["bytes"], (cost, plain)
    assert cost["full_passes"] <= plain["full_passes"] + passes, (cost, plain)
    assert cost["transcendentals"] <= plain["transcendentals"] + (transcendentals + 0.01) * S * V, (cost, plain)
    assert cost["flops"] <= plain["flops"] + flops * S * V, (cost, plain)
