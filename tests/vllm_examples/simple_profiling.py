# vLLM's examples/offline_inference/simple_profiling.py with the import changed (and the model: the embedded
# default). jaxllm records a jax.profiler trace (TensorBoard / XProf) into `llm.profile_dir`.
from jaxllm import LLM, SamplingParams

prompts = [
    "Hello, my name is",
    "The president of the United States is",
    "The capital of France is",
    "The future of AI is",
]
sampling_params = SamplingParams(temperature=0.8, top_p=0.95)


def main():
    llm = LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct", tensor_parallel_size=1)

    llm.start_profile()
    outputs = llm.generate(prompts, sampling_params)
    llm.stop_profile()

    for output in outputs:
        prompt = output.prompt
        generated_text = output.outputs[0].text
        print(f"Prompt: {prompt!r}, Generated text: {generated_text!r}")
    print(f"Profile written to {llm.profile_dir}")
    return llm.profile_dir


if __name__ == "__main__":
    main()
