"""``FlexibleArgumentParser``: vLLM's argument parser for scripts that add ``EngineArgs.add_cli_args``.

It is an ``argparse.ArgumentParser`` that also takes a long option spelled with underscores
(``--max_model_len 512`` as ``--max-model-len 512``, ``--enforce_eager=true`` keeps its value), as vLLM's does,
so command lines written for vLLM parse unchanged.
"""

from __future__ import annotations

import argparse
import sys


def _dashed(arg: str) -> str:
    """``--a_b=c_d`` -> ``--a-b=c_d``: only the option name changes, never its value or a positional."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return name.replace("_", "-") + sep + value


class FlexibleArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that accepts ``--option_name`` for ``--option-name``."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args([_dashed(a) for a in args], namespace)
