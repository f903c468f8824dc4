"""The ``jaxllm`` command line: argument parsing and output with a fake engine, plus one real run."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from jaxllm import cli
from jaxllm.default_model import DEFAULT_MODEL, INSTALL_HINT, default_model_available


@dataclass
class FakeParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 16


@dataclass
class FakeLLM:
    """Records calls; replies 'echo:<last user text or prompt>'."""

    model: str
    dtype: str = "auto"
    seed: int = 0
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    calls: list = field(default_factory=list)

    instances: ClassVar[list] = []

    def __post_init__(self):
        FakeLLM.instances.append(self)

    @staticmethod
    def _out(text):
        return types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text)])

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append(("generate", list(prompts), params, use_tqdm))
        return [self._out(f"echo:{p}") for p in prompts]

    def chat(self, messages, params, use_tqdm=True):
        convs = [messages] if isinstance(messages[0], dict) else messages
        self.calls.append(("chat", [list(c) for c in convs], params, use_tqdm))
        return [self._out(f"echo:{c[-1]['content']}") for c in convs]


@pytest.fixture
def fake(monkeypatch):
    FakeLLM.instances.clear()
    monkeypatch.setattr(cli, "_api", lambda: (FakeLLM, FakeParams))
    return FakeLLM


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("generate", "chat", "bench", DEFAULT_MODEL, INSTALL_HINT, "examples:"):
        assert word in out
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = capsys.readouterr().out
    for flag in ("--model", "--max-tokens", "--temperature", "--top-p", "--top-k", "--seed", "--prompts-file",
                 "--dtype", "--chat"):
        assert flag in out
    assert cli.main([]) == 2  # no command: help, non-zero


def test_generate_one_prompt(fake, capsys):
    assert cli.main(["generate", "Hello there", "--max-tokens", "7", "--temperature", "0.5", "--top-p", "0.9",
                     "--top-k", "20", "--seed", "3", "--dtype", "float32"]) == 0
    (llm,) = fake.instances
    assert (llm.model, llm.dtype, llm.seed) == (DEFAULT_MODEL, "float32", 3)
    kind, prompts, params, use_tqdm = llm.calls[0]
    assert kind == "generate" and prompts == ["Hello there"] and use_tqdm is False
    assert params == FakeParams(temperature=0.5, top_p=0.9, top_k=20, max_tokens=7)
    out = capsys.readouterr().out
    assert "Hello there" in out and "echo:Hello there" in out


def test_generate_many_prompts_and_file(fake, capsys, tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("from file 1\n\n  \nfrom file 2\n")
    assert cli.main(["generate", "a", "b", "--prompts-file", str(f), "--model", "/my/model.gguf"]) == 0
    (llm,) = fake.instances
    _, prompts, params, use_tqdm = llm.calls[0]
    assert prompts == ["a", "b", "from file 1", "from file 2"] and use_tqdm is True
    assert llm.model == "/my/model.gguf" and params.temperature == 0.0 and params.max_tokens == 64
    out = capsys.readouterr().out
    assert "[4/4]" in out and out.index("echo:a") < out.index("echo:b") < out.index("echo:from file 2")


def test_generate_chat_applies_template_via_llm_chat(fake, capsys):
    assert cli.main(["generate", "--chat", "What is 2+2?", "Hi"]) == 0
    kind, convs, _, _ = fake.instances[0].calls[0]
    assert kind == "chat" and convs == [[{"role": "user", "content": "What is 2+2?"}],
                                        [{"role": "user", "content": "Hi"}]]


def test_generate_needs_a_prompt(fake):
    with pytest.raises(SystemExit, match="at least one PROMPT"):
        cli.main(["generate"])
    with pytest.raises(SystemExit):  # argparse rejects a non-positive max-tokens
        cli.main(["generate", "x", "--max-tokens", "0"])
    assert not fake.instances


def test_errors_are_reported_without_traceback(monkeypatch, capsys):
    def broken(**kwargs):
        raise FileNotFoundError(f"the default model is not installed. Install it with:\n    {INSTALL_HINT}")

    monkeypatch.setattr(cli, "_api", lambda: (broken, FakeParams))
    assert cli.main(["generate", "x"]) == 1
    assert INSTALL_HINT in capsys.readouterr().err


def test_chat_repl_multi_turn_reset_exit(fake, capsys):
    replies = iter(["first", "", "second", "/reset", "third", "/exit", "never"])
    args = cli.build_parser().parse_args(["chat", "--system", "Be terse.", "--max-tokens", "5"])
    assert cli.cmd_chat(args, input_fn=lambda prompt: next(replies)) == 0
    calls = fake.instances[0].calls
    assert [c[0] for c in calls] == ["chat"] * 3
    sys_msg = {"role": "system", "content": "Be terse."}
    assert calls[1][1][0] == [sys_msg, {"role": "user", "content": "first"},
                              {"role": "assistant", "content": "echo:first"}, {"role": "user", "content": "second"}]
    assert calls[2][1][0] == [sys_msg, {"role": "user", "content": "third"}]  # after /reset
    assert calls[0][2].max_tokens == 5 and calls[0][3] is False
    out = capsys.readouterr().out
    assert "assistant> echo:second" in out and "never" not in out


def test_chat_repl_ends_on_eof(fake):
    def eof(prompt):
        raise EOFError

    assert cli.cmd_chat(cli.build_parser().parse_args(["chat"]), input_fn=eof) == 0


def test_bench_forwards_argv(monkeypatch):
    seen = []
    module = types.ModuleType("jaxllm.bench")
    module.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "jaxllm.bench", module)
    import jaxllm

    monkeypatch.setattr(jaxllm, "bench", module, raising=False)
    assert cli.main(["bench", "--num-prompts", "8", "--help"]) == 0
    assert seen == [["--num-prompts", "8", "--help"]]


def test_bench_missing_module_is_clear(monkeypatch, capsys):
    import jaxllm

    monkeypatch.delattr(jaxllm, "bench", raising=False)
    monkeypatch.setitem(sys.modules, "jaxllm.bench", None)  # import of jaxllm.bench fails
    assert cli.main(["bench"]) == 2
    assert "jaxllm.bench" in capsys.readouterr().err


@pytest.mark.skipif(not default_model_available(), reason=f"default model not installed ({INSTALL_HINT})")
def test_real_default_model_says_paris(capsys):
    """The README's main command, in-process: the embedded model, greedy."""
    assert cli.main(["generate", "The capital of France is", "--max-tokens", "6", "--enforce-eager"]) == 0
    assert "Paris" in capsys.readouterr().out


def test_cli_compiles_lazily_by_default():
    """A one-shot command compiles only the shapes it uses, unless --no-enforce-eager asks for all of them."""
    parser = cli.build_parser()
    assert parser.parse_args(["generate", "x"]).enforce_eager is True
    assert parser.parse_args(["generate", "x", "--no-enforce-eager"]).enforce_eager is False
