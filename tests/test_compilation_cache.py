"""The persistent compilation cache jaxllm turns on: every program cached, and bounded so that JAX locks each read
and write (an unbounded cache is written in place, and a second process reading an entry mid-write gets a torn
executable)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import jax
from jax._src import compilation_cache
from jaxllm.llm_startup import CACHE_MAX_BYTES, enable_compilation_cache
if sys.argv[2] == "user":
    jax.config.update("jax_compilation_cache_max_size", 123 << 20)
enable_compilation_cache(sys.argv[1])
jax.jit(lambda x: x * 2 + 1)(jax.numpy.arange(3.0)).block_until_ready()
cache = compilation_cache._get_cache(jax.devices()[0].client)
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir,
                  "max_size": jax.config.jax_compilation_cache_max_size, "expected": CACHE_MAX_BYTES,
                  "min_secs": jax.config.jax_persistent_cache_min_compile_time_secs,
                  "locked": cache.eviction_enabled}))
"""


def _probe(where: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, where, mode], capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cache_is_bounded_and_locked(tmp_path):
    r = _probe(str(tmp_path / "xla"), "default")
    assert r["dir"] == str(tmp_path / "xla") and r["min_secs"] == 0
    assert r["max_size"] == r["expected"] > 0 and r["locked"]
    assert any((tmp_path / "xla").iterdir())  # the program was written


def test_users_bound_is_kept(tmp_path):
    assert _probe(str(tmp_path / "xla"), "user")["max_size"] == 123 << 20
