"""EngineArgs.add_cli_args / from_cli_args and FlexibleArgumentParser (vLLM's command-line helpers), no model."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from jaxllm import EngineArgs
from jaxllm.utils import FlexibleArgumentParser
from jaxllm.utils.argparse_utils import FlexibleArgumentParser as FromArgparseUtils


def _parser():
    parser = FlexibleArgumentParser()
    assert EngineArgs.add_cli_args(parser) is parser  # returned, as vLLM's
    return parser


def test_defaults_are_the_fields_defaults():
    args = vars(_parser().parse_args([]))
    for field in dataclasses.fields(EngineArgs):
        assert args[field.name] == field.default, field.name
    assert FromArgparseUtils is FlexibleArgumentParser


def test_flag_types():
    args = _parser().parse_args([
        "--max-num-seqs", "8", "--gpu-memory-utilization", "0.5", "--enforce-eager", "--no-enable-prefix-caching",
        "--hf-overrides", '{"rope_theta": 5e5}', "--speculative-config", '{"method": "ngram"}', "--dtype",
        "bfloat16", "--max-model-len", "None", "--served-model-name", "a", "b", "--compilation-config", "3",
        "--background-compile", "--seed", "7"])
    assert (args.max_num_seqs, args.gpu_memory_utilization, args.enforce_eager, args.enable_prefix_caching) == (
        8, 0.5, True, False)
    assert args.hf_overrides == {"rope_theta": 5e5} and args.speculative_config == {"method": "ngram"}
    assert (args.dtype, args.max_model_len, args.served_model_name) == ("bfloat16", None, ["a", "b"])
    assert (args.compilation_config, args.background_compile, args.seed) == (3, True, 7)


def test_underscored_flags_and_argument_groups():
    parser = FlexibleArgumentParser()
    group = parser.add_argument_group("Engine arguments")
    EngineArgs.add_cli_args(group)
    group.set_defaults(model="some/model")
    parser.add_argument("--max-tokens", type=int)
    args = parser.parse_args(["--max_num_seqs=3", "--enforce_eager", "--max_tokens", "5", "--tokenizer", "a_b"])
    assert (args.model, args.max_num_seqs, args.enforce_eager, args.max_tokens, args.tokenizer) == (
        "some/model", 3, True, 5, "a_b")  # values keep their underscores


def test_bad_values():
    with pytest.raises(SystemExit):  # argparse: not an int
        _parser().parse_args(["--max-num-seqs", "many"])
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        EngineArgs.from_cli_args(_parser().parse_args(["--gpu-memory-utilization", "2"]))


def test_from_cli_args_keeps_engine_fields_and_task():
    parser = _parser()
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.set_defaults(task="embed")
    with pytest.warns(DeprecationWarning, match="task"):
        args = EngineArgs.from_cli_args(parser.parse_args(["--max-num-seqs", "2"]))
    assert isinstance(args, EngineArgs) and args.max_num_seqs == 2 and args.runner == "pooling"
    assert isinstance(parser.parse_args([]), argparse.Namespace)
