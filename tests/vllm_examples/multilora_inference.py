# vLLM's examples/offline_inference/multilora_inference.py with the imports changed; the test passes the base model
# and the adapter's folder (a tiny random PEFT adapter) instead of downloading them.
from jaxllm import EngineArgs, LLMEngine, RequestOutput, SamplingParams
from jaxllm.lora.request import LoRARequest

BASE_MODEL = "meta-llama/Llama-2-7b-hf"
SQL_PROMPT = (
    "[user] Write a SQL query to answer the question based on the table schema.\n\n context: CREATE TABLE "
    "table_name_74 (icao VARCHAR, airport VARCHAR)\n\n question: Name the ICAO for lilongwe international airport "
    "[/user] [assistant]"
)


def create_test_prompts(lora_path: str) -> list[tuple[str, SamplingParams, LoRARequest | None]]:
    """2 requests for the base model, 2 for the LoRA under two names (the same adapter). With `max_loras=1`,
    the requests of the second adapter run after those of the first have finished."""
    return [
        (
            "A robot may not injure a human being",
            SamplingParams(temperature=0.0, logprobs=1, prompt_logprobs=1, max_tokens=128),
            None,
        ),
        (
            "To be or not to be,",
            SamplingParams(temperature=0.8, top_k=5, presence_penalty=0.2, max_tokens=128),
            None,
        ),
        (
            SQL_PROMPT,
            SamplingParams(temperature=0.0, logprobs=1, prompt_logprobs=1, max_tokens=128, stop_token_ids=[32003]),
            LoRARequest("sql-lora", 1, lora_path),
        ),
        (
            SQL_PROMPT,
            SamplingParams(temperature=0.0, logprobs=1, prompt_logprobs=1, max_tokens=128, stop_token_ids=[32003]),
            LoRARequest("sql-lora2", 2, lora_path),
        ),
    ]


def process_requests(engine: LLMEngine, test_prompts: list[tuple[str, SamplingParams, LoRARequest | None]]):
    """Add one prompt per step while stepping the engine, printing each finished output."""
    request_id = 0
    finished = []

    print("-" * 50)
    while test_prompts or engine.has_unfinished_requests():
        if test_prompts:
            prompt, sampling_params, lora_request = test_prompts.pop(0)
            engine.add_request(str(request_id), prompt, sampling_params, lora_request=lora_request)
            request_id += 1

        request_outputs: list[RequestOutput] = engine.step()

        for request_output in request_outputs:
            if request_output.finished:
                print(request_output)
                print("-" * 50)
                finished.append(request_output)
    return finished


def initialize_engine() -> LLMEngine:
    # max_loras: adapters in one batch; max_lora_rank: the largest rank; max_cpu_loras: adapters kept on the host
    engine_args = EngineArgs(
        model=BASE_MODEL,
        enable_lora=True,
        max_loras=1,
        max_lora_rank=8,
        max_cpu_loras=2,
        max_num_seqs=256,
    )
    return LLMEngine.from_engine_args(engine_args)


def main(lora_path: str):
    engine = initialize_engine()
    test_prompts = create_test_prompts(lora_path)
    return process_requests(engine, test_prompts)
