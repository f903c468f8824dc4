# vLLM's examples/offline_inference/data_parallel.py adapted to jaxllm: vLLM starts one process per data-parallel
# rank and splits the prompts among them; jaxllm serves `data_parallel_size` replicas from one LLM (one
# controller, each replica on its own tensor_parallel_size devices; docs/data_parallel.md), which places every
# request on the replica with the least outstanding work. The command line keeps vLLM's flags.
from jaxllm import LLM, SamplingParams
from jaxllm.utils import FlexibleArgumentParser


def parse_args():
    parser = FlexibleArgumentParser(description="Data Parallel Inference")
    parser.add_argument("--model", type=str, default="HuggingFaceTB/SmolLM2-135M-Instruct", help="Model name or path")
    parser.add_argument("--dp-size", type=int, default=2, help="Data parallel size")
    parser.add_argument("--tp-size", type=int, default=2, help="Tensor parallel size")
    parser.add_argument("--enforce-eager", action="store_true", help="Enforce eager mode execution.")
    parser.add_argument("--trust-remote-code", action="store_true", help="Trust remote code.")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="Maximum number of sequences per replica.")
    parser.add_argument("--max-model-len", type=int, help="Max model length")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8, help="Fraction of GPU memory.")
    parser.add_argument("--seed", type=int, default=1, help="Seed")
    return parser.parse_args()


def main():
    args = parse_args()
    prompts = [
        "Hello, my name is",
        "The president of the United States is",
        "The capital of France is",
        "The future of AI is",
    ] * 2
    llm = LLM(
        model=args.model,
        data_parallel_size=args.dp_size,
        tensor_parallel_size=args.tp_size,
        enforce_eager=args.enforce_eager,
        trust_remote_code=args.trust_remote_code,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        seed=args.seed,
    )
    # vLLM's example gives each rank its own max_tokens; here each prompt has its own SamplingParams
    sampling_params = [
        SamplingParams(temperature=0.8, top_p=0.95, max_tokens=[16, 20][i % 2]) for i in range(len(prompts))
    ]
    outputs = llm.generate(prompts, sampling_params)
    for i, output in enumerate(outputs):
        prompt = output.prompt
        generated_text = output.outputs[0].text
        print(f"Prompt {i}: {prompt!r}, Generated text: {generated_text!r}")
    print(f"Replicas: {args.dp_size}, devices: {llm.get_world_size()}")


if __name__ == "__main__":
    main()
