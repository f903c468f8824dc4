# vLLM's examples/offline_inference/basic/chat.py (shortened) with the import changed.
from jaxllm import LLM


def print_outputs(outputs):
    print("\nGenerated Outputs:\n" + "-" * 80)
    for output in outputs:
        prompt = output.prompt
        generated_text = output.outputs[0].text
        print(f"Prompt: {prompt!r}\n")
        print(f"Generated text: {generated_text!r}")
        print("-" * 80)


def main():
    llm = LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct")
    sampling_params = llm.get_default_sampling_params()
    sampling_params.max_tokens = 16
    sampling_params.temperature = 0.0

    # In this script, we demonstrate how to pass input to the chat method:
    conversation = [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hello! How can I assist you today?"},
        {
            "role": "user",
            "content": "Write an essay about the importance of higher education.",
        },
    ]
    outputs = llm.chat(conversation, sampling_params, use_tqdm=False)
    print_outputs(outputs)

    # You can run batch inference with llm.chat API
    conversations = [conversation for _ in range(4)]

    # We turn on tqdm progress bar to verify it's indeed running batch inference
    outputs = llm.chat(conversations, sampling_params, use_tqdm=True)
    print_outputs(outputs)

    # OpenAI-style content parts are accepted too
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    outputs = llm.chat(parts, sampling_params, use_tqdm=False)
    print_outputs(outputs)
    return outputs


if __name__ == "__main__":
    main()
