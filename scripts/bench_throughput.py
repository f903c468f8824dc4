"""Offline throughput benchmark; same as ``jaxllm bench`` (see jaxllm/bench/main.py for the options)."""

from jaxllm.bench import main

if __name__ == "__main__":
    main()
