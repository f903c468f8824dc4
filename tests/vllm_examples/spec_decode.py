# vLLM's examples/offline_inference/spec_decode.py with the imports changed, text-only: the prompts are a built-in
# list instead of a benchmark dataset, and the multimodal keywords and the EAGLE / MTP branches are left out
# (docs/spec_decode.md). n-gram speculation proposes drafts from the prompt's own text.
from transformers import AutoTokenizer

from jaxllm import LLM, SamplingParams
from jaxllm.engine.metrics import Counter, Histogram, Vector
from jaxllm.inputs import TokensPrompt
from jaxllm.utils import FlexibleArgumentParser

PROMPTS = [
    (
        "Repeat after me: the quick brown fox jumps over the lazy dog. "
        "The quick brown fox jumps over the lazy dog. The quick brown fox"
    ),
    "1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3",
]


def parse_args():
    parser = FlexibleArgumentParser()
    parser.add_argument("--method", type=str, default="ngram", choices=["ngram", "None"])
    parser.add_argument("--num-spec-tokens", type=int, default=2)
    parser.add_argument("--prompt-lookup-max", type=int, default=5)
    parser.add_argument("--prompt-lookup-min", type=int, default=2)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--enable-chunked-prefill", action="store_true")
    parser.add_argument("--temp", type=float, default=0)
    parser.add_argument("--print-output", action="store_true")
    parser.add_argument("--batch-size", type=int, default=None)  # the engine's default
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--model-dir", type=str, default=None)
    return parser.parse_args()


def main():
    args = parse_args()
    model_dir = args.model_dir or "meta-llama/Llama-3.1-8B-Instruct"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = [tokenizer.encode(prompt, add_special_tokens=False) for prompt in PROMPTS]

    if args.method == "None":  # vanilla inference
        speculative_config = None
    elif args.method == "ngram":
        speculative_config = {
            "method": "ngram",
            "num_speculative_tokens": args.num_spec_tokens,
            "prompt_lookup_max": args.prompt_lookup_max,
            "prompt_lookup_min": args.prompt_lookup_min,
        }
    else:
        raise ValueError(f"unknown method: {args.method}")

    llm = LLM(
        model=model_dir,
        trust_remote_code=True,
        tensor_parallel_size=args.tp,
        enable_chunked_prefill=args.enable_chunked_prefill,
        enforce_eager=args.enforce_eager,
        gpu_memory_utilization=0.8,
        speculative_config=speculative_config,
        disable_log_stats=False,
        max_model_len=4096,
        max_num_seqs=args.batch_size,
    )

    sampling_params = SamplingParams(temperature=args.temp, max_tokens=args.output_len)
    outputs = llm.generate(
        [TokensPrompt(prompt_token_ids=x) for x in prompt_ids],
        sampling_params=sampling_params,
    )

    if args.print_output:
        for output in outputs:
            print("-" * 50)
            print(f"prompt: {output.prompt}")
            print(f"generated text: {output.outputs[0].text}")
            print("-" * 50)

    metrics = llm.get_metrics()

    total_num_output_tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    num_drafts = 0
    num_draft_tokens = 0
    num_accepted_tokens = 0
    total_num_prompt_tokens = 0
    total_prefill_time = 0.0
    total_decode_time = 0.0
    acceptance_counts = [0] * args.num_spec_tokens
    for metric in metrics:
        if metric.name == "vllm:spec_decode_num_drafts":
            assert isinstance(metric, Counter)
            num_drafts += metric.value
        elif metric.name == "vllm:spec_decode_num_draft_tokens":
            assert isinstance(metric, Counter)
            num_draft_tokens += metric.value
        elif metric.name == "vllm:spec_decode_num_accepted_tokens":
            assert isinstance(metric, Counter)
            num_accepted_tokens += metric.value
        elif metric.name == "vllm:spec_decode_num_accepted_tokens_per_pos":
            assert isinstance(metric, Vector)
            for pos in range(len(metric.values)):
                acceptance_counts[pos] += metric.values[pos]
        elif metric.name == "vllm:prompt_tokens":
            assert isinstance(metric, Counter)
            total_num_prompt_tokens += metric.value
        elif metric.name == "vllm:request_prefill_time_seconds":
            assert isinstance(metric, Histogram)
            total_prefill_time += metric.sum
        elif metric.name == "vllm:request_decode_time_seconds":
            assert isinstance(metric, Histogram)
            total_decode_time += metric.sum

    prefill_speed = total_num_prompt_tokens / total_prefill_time if total_prefill_time > 0 else 0
    decode_speed = total_num_output_tokens / total_decode_time if total_decode_time > 0 else 0
    acceptance_length = 1 + (num_accepted_tokens / num_drafts) if num_drafts > 0 else 1
    draft_utilization_rate = num_accepted_tokens / num_draft_tokens * 100 if num_draft_tokens > 0 else 0

    print("=========== Speculative Decoding Stats ============")
    print(f"Total input tokens:                      {total_num_prompt_tokens:<10}")
    print(f"Total output tokens:                     {total_num_output_tokens:<10}")
    print()
    print(f"Input token throughput (tok/s):          {prefill_speed:<10.2f}")
    print(f"Output token throughput (tok/s):         {decode_speed:<10.2f}")
    print()
    if args.method != "None":
        print(f"Number of drafts:                        {num_drafts:<10}")
        print(f"Draft tokens generated:                  {num_draft_tokens:<10}")
        print(f"Draft utilization rate:                  {draft_utilization_rate:<10.1f}")
        print(f"Accepted tokens:                         {num_accepted_tokens:<10}")
        print(f"Mean acceptance length:                  {acceptance_length:<10.2f}")
        for i in range(len(acceptance_counts)):
            acceptance_rate = acceptance_counts[i] / num_drafts if num_drafts > 0 else 0
            print(f"acceptance at token {i}: {acceptance_rate:.2f}")
    print("====================================================")


if __name__ == "__main__":
    main()
