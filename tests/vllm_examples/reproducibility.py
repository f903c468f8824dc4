# vLLM's examples/offline_inference/reproducibility.py with the import changed (and the model: the embedded
# default). The engine runs in this process and its sampling draws from its own generators seeded by `seed`, so
# the same seed gives the same texts, whatever the random state of the user's code.
import random

from jaxllm import LLM, SamplingParams

SEED = 42

prompts = [
    "Hello, my name is",
    "The president of the United States is",
    "The capital of France is",
    "The future of AI is",
]
sampling_params = SamplingParams(temperature=0.8, top_p=0.95)


def main():
    llm = LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct", seed=SEED)
    outputs = llm.generate(prompts, sampling_params)
    print("-" * 50)
    for output in outputs:
        prompt = output.prompt
        generated_text = output.outputs[0].text
        print(f"Prompt: {prompt!r}\nGenerated text: {generated_text!r}")
        print("-" * 50)

    # A random number drawn outside the engine
    print(random.randint(0, 100))
    return outputs


if __name__ == "__main__":
    main()
