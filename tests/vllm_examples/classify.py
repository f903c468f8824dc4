# vLLM's examples/offline_inference/basic/classify.py with the import changed (the test passes --model).
from argparse import Namespace

from jaxllm import LLM, EngineArgs
from jaxllm.utils import FlexibleArgumentParser


def parse_args():
    parser = FlexibleArgumentParser()
    parser = EngineArgs.add_cli_args(parser)
    # Example defaults
    parser.set_defaults(
        model="jason9693/Qwen2.5-1.5B-apeach",
        runner="pooling",
        enforce_eager=True,
    )
    return parser.parse_args()


def main(args: Namespace):
    prompts = [
        "Hello, my name is",
        "The president of the United States is",
        "The capital of France is",
        "The future of AI is",
    ]

    # runner="pooling" selects the pooling runner for classification models
    llm = LLM(**vars(args))

    # The output is a list of ClassificationRequestOutputs.
    outputs = llm.classify(prompts)

    print("\nGenerated Outputs:\n" + "-" * 60)
    for prompt, output in zip(prompts, outputs):
        probs = output.outputs.probs
        probs_trimmed = (str(probs[:16])[:-1] + ", ...]") if len(probs) > 16 else probs
        print(f"Prompt: {prompt!r} \nClass Probabilities: {probs_trimmed} (size={len(probs)})")
        print("-" * 60)
    return outputs


if __name__ == "__main__":
    args = parse_args()
    main(args)
