"""One process of the multi-process tests (tests/parallel/test_multi_process.py): joins ``jax.distributed`` on
localhost with CPU collectives, serves the tiny checkpoint with the given parallel sizes and writes the sampled
token ids as JSON.

Usage: python multiprocess_worker.py CHECKPOINT OUT_JSON PORT NUM_PROCESSES PROCESS_ID LOCAL_DEVICES TP DP
With PORT "launcher" the script leaves ``jax.distributed.initialize`` to ``LLM`` (``distributed_executor_backend=
"external_launcher"``), which reads the process layout from the launcher's environment.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> None:
    checkpoint, out, port, nproc, pid, local, tp, dp = argv
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local}"
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    launcher = port == "launcher"
    if not launcher:
        jax.distributed.initialize(f"localhost:{port}", num_processes=int(nproc), process_id=int(pid))
    sys.path.insert(0, os.path.dirname(__file__))
    from multiprocess_cases import PARAMS, PROMPTS, llm_kwargs

    from jaxllm import LLM

    llm = LLM(checkpoint, tensor_parallel_size=int(tp), data_parallel_size=int(dp),
              distributed_executor_backend="external_launcher" if launcher else None, **llm_kwargs())
    assert jax.process_count() == int(nproc)
    outputs = llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    with open(out, "w") as f:
        json.dump({"tokens": [[list(c.token_ids) for c in o.outputs] for o in outputs],
                   "local_replicas": len(llm.collective_rpc(lambda runner: None)),
                   "local_steps": llm.llm_engine.stats.num_steps}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
