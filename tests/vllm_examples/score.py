# vLLM's examples/offline_inference/basic/score.py with the import changed (the test passes --model).
from argparse import Namespace

from jaxllm import LLM, EngineArgs
from jaxllm.utils.argparse_utils import FlexibleArgumentParser


def parse_args():
    parser = FlexibleArgumentParser()
    parser = EngineArgs.add_cli_args(parser)
    # Example defaults
    parser.set_defaults(
        model="BAAI/bge-reranker-v2-m3",
        runner="pooling",
        enforce_eager=True,
    )
    return parser.parse_args()


def main(args: Namespace):
    text_1 = "What is the capital of France?"
    texts_2 = [
        "The capital of Brazil is Brasilia.",
        "The capital of France is Paris.",
    ]

    # runner="pooling" selects the pooling runner for cross-encoder models
    llm = LLM(**vars(args))

    # The output is a list of ScoringRequestOutputs.
    outputs = llm.score(text_1, texts_2)

    print("\nGenerated Outputs:\n" + "-" * 60)
    for text_2, output in zip(texts_2, outputs):
        score = output.outputs.score
        print(f"Pair: {[text_1, text_2]!r} \nScore: {score}")
        print("-" * 60)
    return outputs


if __name__ == "__main__":
    args = parse_args()
    main(args)
