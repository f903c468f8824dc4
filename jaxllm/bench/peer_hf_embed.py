"""The HF transformers peer of the embedding benchmark: ``AutoModel`` (bf16, SDPA attention) over the
benchmark's documents in length-sorted, right-padded batches of at most ``--max-batch-tokens`` padded tokens,
pooled as our run pools them (CLS for encoders, last token for decoders) and L2-normalised. Run as a subprocess
by ``jaxllm bench --workload E-... --peer hf``."""

from __future__ import annotations

import dataclasses
import json
import time


def _batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length, grouped so that rows x longest <= max_batch_tokens (at least one row)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > max_batch_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


def _embed(model, prompts: list[list[int]], batches: list[list[int]], encoder: bool, device: str) -> list:
    """Normalised pooled rows per batch: each batch padded on the host and copied to ``device`` once."""
    import torch

    pooled = []
    with torch.no_grad():
        for batch in batches:
            lens = torch.tensor([len(prompts[i]) for i in batch])
            ids = torch.zeros(len(batch), int(lens.max()), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, :len(prompts[i])] = torch.tensor(prompts[i])
            mask = (torch.arange(ids.shape[1])[None] < lens[:, None]).long()
            ids, mask, lens = ids.to(device), mask.to(device), lens.to(device)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            rows = hidden[:, 0] if encoder else hidden[torch.arange(len(batch), device=device), lens - 1]
            pooled.append(torch.nn.functional.normalize(rows.float(), dim=-1))
    return pooled


def main() -> None:
    from jaxllm.bench.peer_hf import peer_arg_parser

    p = peer_arg_parser()
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    args = p.parse_args()
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel

    from jaxllm.bench.workloads import Workload

    if args.threads:
        torch.set_num_threads(args.threads)
    w = Workload.from_json(args.workload_json)
    config = AutoConfig.from_pretrained(args.model_dir)
    prompts = w.requests(config.vocab_size)[0][:args.max_requests or None]
    encoder = config.architectures[0] in ("BertModel", "XLMRobertaModel", "RobertaModel")
    with torch.device(args.device):
        model = AutoModel.from_config(config, dtype=getattr(torch, args.dtype), attn_implementation="sdpa").eval()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    batches = _batches([len(x) for x in prompts], args.max_batch_tokens)
    _embed(model, prompts, batches[:1], encoder, args.device)  # CUDA context, cuBLAS, SDPA kernels: not counted
    sync()
    t0 = time.perf_counter()
    _embed(model, prompts, batches, encoder, args.device)
    sync()
    wall = time.perf_counter() - t0
    with open(args.output, "w") as f:
        json.dump({"name": "transformers AutoModel (sdpa, bf16)", "transformers": transformers.__version__,
                   "torch": torch.__version__, "num_requests": len(prompts), "embed_s": wall,
                   "docs_s": len(prompts) / wall, "tokens_s": sum(map(len, prompts)) / wall,
                   "workload": dataclasses.asdict(w)}, f)


if __name__ == "__main__":
    main()
