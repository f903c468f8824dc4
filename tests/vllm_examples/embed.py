# vLLM's examples/offline_inference/basic/embed.py with the import changed (the test passes --model).
from argparse import Namespace

from jaxllm import LLM, EngineArgs
from jaxllm.utils import FlexibleArgumentParser


def parse_args():
    parser = FlexibleArgumentParser()
    parser = EngineArgs.add_cli_args(parser)
    # Example defaults
    parser.set_defaults(
        model="intfloat/e5-small",
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

    # runner="pooling" selects the pooling runner for embedding models
    llm = LLM(**vars(args))

    # The output is a list of EmbeddingRequestOutputs.
    outputs = llm.embed(prompts)

    print("\nGenerated Outputs:\n" + "-" * 60)
    for prompt, output in zip(prompts, outputs):
        embeds = output.outputs.embedding
        embeds_trimmed = (
            (str(embeds[:16])[:-1] + ", ...]") if len(embeds) > 16 else embeds
        )
        print(f"Prompt: {prompt!r} \nEmbeddings: {embeds_trimmed} (size={len(embeds)})")
        print("-" * 60)
    return outputs


if __name__ == "__main__":
    args = parse_args()
    main(args)
