# vLLM's examples/offline_inference/automatic_prefix_caching.py with the import changed (and the model: the
# embedded default); the table is shorter, to fit the tests' max_model_len.
import time

from jaxllm import LLM, SamplingParams

# A prompt holding a markdown table: the prefix both questions share.
LONG_PROMPT = (
    "You are a helpful assistant in recognizes the content of tables in markdown format. Here is a table as follows.\n# Table\n"
    + """
| ID  | Name          | Age | Occupation    | Country       | Email                  |
|-----|---------------|-----|---------------|---------------|------------------------|
| 1   | John Doe      | 29  | Engineer      | USA           | john.doe@example.com   |
| 2   | Jane Smith    | 34  | Doctor        | Canada        | jane.smith@example.com |
| 3   | Alice Johnson | 27  | Teacher       | UK            | alice.j@example.com    |
| 4   | Bob Brown     | 45  | Artist        | Australia     | bob.b@example.com      |
| 5   | Carol White   | 31  | Scientist     | New Zealand   | carol.w@example.com    |
| 6   | Dave Green    | 28  | Lawyer        | Ireland       | dave.g@example.com     |
| 7   | Zack Blue     | 30  | Lawyer        | Australia     | zack.b@example.com     |
"""
)


def get_generation_time(llm, sampling_params, prompts):
    # time the generation
    start_time = time.time()
    output = llm.generate(prompts, sampling_params=sampling_params)
    end_time = time.time()
    # print the output and generation time
    print("-" * 30)
    print(f"Output: {output[0].outputs[0].text}")
    print(f"Generation time: {end_time - start_time} seconds.")
    print("-" * 30)
    return output


def main():
    # enable_prefix_caching=True turns on automatic prefix caching (jaxllm's default, as vLLM's)
    llm = LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct", enable_prefix_caching=True)

    sampling_params = SamplingParams(temperature=0, max_tokens=100)

    # Querying the age of John Doe
    first = get_generation_time(
        llm,
        sampling_params,
        LONG_PROMPT + "Question: what is the age of John Doe? Your answer: The age of John Doe is ",
    )

    # Querying the age of Zack Blue: the KV cache of LONG_PROMPT is reused
    second = get_generation_time(
        llm,
        sampling_params,
        LONG_PROMPT + "Question: what is the age of Zack Blue? Your answer: The age of Zack Blue is ",
    )
    return first, second


if __name__ == "__main__":
    main()
