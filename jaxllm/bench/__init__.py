"""Offline throughput benchmark (``jaxllm bench`` / scripts/bench_throughput.py): workloads, roofline, peer."""

from jaxllm.bench.main import main

__all__ = ["main"]
