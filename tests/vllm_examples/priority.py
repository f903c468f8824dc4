# Priority scheduling as vLLM documents it (scheduling_policy="priority", generate(priority=...)), import changed.
from jaxllm import LLM, SamplingParams

prompts = [
    "Hello, my name is",
    "The president of the United States is",
    "The capital of France is",
    "The future of AI is",
]
# Lower values are scheduled first.
priority = [3, 2, 1, 0]
sampling_params = SamplingParams(temperature=0.0, max_tokens=8)


def main():
    llm = LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct", scheduling_policy="priority", max_num_seqs=2)
    outputs = llm.generate(prompts, sampling_params, priority=priority)
    for output in outputs:
        print(f"Prompt: {output.prompt!r}, Generated text: {output.outputs[0].text!r}")
    return outputs


if __name__ == "__main__":
    main()
