# Logprobs the way vLLM's docs request them (SamplingParams.logprobs / prompt_logprobs), import changed.
from jaxllm import LLM, SamplingParams

prompts = ["The capital of France is", "1, 2, 3, 4,"]


def main():
    llm = LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct")
    sampling_params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=5, prompt_logprobs=1)
    outputs = llm.generate(prompts, sampling_params)
    for output in outputs:
        print(f"Prompt: {output.prompt!r}")
        # prompt_logprobs: one dict per prompt token (None for the first)
        for token_id, position in zip(output.prompt_token_ids[1:], output.prompt_logprobs[1:]):
            print(f"  prompt token {token_id}: {position[token_id].logprob:.3f}")
        completion = output.outputs[0]
        print(f"Output: {completion.text!r}  cumulative logprob {completion.cumulative_logprob:.3f}")
        for token_id, top in zip(completion.token_ids, completion.logprobs):
            ranked = sorted(top.values(), key=lambda lp: lp.rank)
            print(f"  {top[token_id].decoded_token!r} rank {top[token_id].rank}:",
                  ", ".join(f"{lp.decoded_token!r} {lp.logprob:.2f}" for lp in ranked))
    return outputs


if __name__ == "__main__":
    main()
