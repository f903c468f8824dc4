"""Sharing host objects between the processes of a ``jax.distributed`` run (docs/multi_host.md)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np


def initialize_distributed() -> None:
    """``jax.distributed.initialize()`` unless the script did it: JAX reads the process count, this process's
    id and the coordinator from the launcher (SLURM's ``srun``, a Kubernetes indexed Job, Open MPI), or from
    ``JAX_COORDINATOR_ADDRESS`` with those of a launcher JAX knows (``distributed_executor_backend=
    "external_launcher"``, docs/multi_host.md). Must run before anything else touches a JAX device."""
    import jax

    if not jax.distributed.is_initialized():
        jax.distributed.initialize()


def allgather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in process order; a collective every process must call. The
    pickled bytes travel through JAX's own collectives (``process_allgather``): no second channel between
    hosts is needed."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(obj), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).reshape(-1)
    buf = np.zeros(int(sizes.max()), np.uint8)
    buf[:data.size] = data
    every = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(sizes), -1)
    return [pickle.loads(every[i, :n].tobytes()) for i, n in enumerate(sizes)]


def local_replica(tree: Any) -> Any:
    """Each replicated array of ``tree`` as its copy on one of this process's devices. Under ``jax.distributed``
    an array on a mesh over several processes is not fully addressable: reading the local copy needs no
    transfer between hosts (every process holds the same sampled ids)."""
    import jax

    def local(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return a
        if not a.sharding.is_fully_replicated:
            raise ValueError(f"local_replica needs a replicated array, got one sharded as {a.sharding}")
        return a.addressable_data(0)

    return jax.tree_util.tree_map(local, tree)


def program_arg(host_array: np.ndarray, sharding) -> Any:
    """A step's host array as an argument of a compiled program whose input is laid out as ``sharding``. When
    this process drives all of its devices the array is passed as is: the program's C++ dispatch copies it to
    each device, which costs less host time per step than a Python ``jax.device_put`` (more so the more
    devices). Under ``jax.distributed`` each process puts its own devices' copies (``jax.device_put``)."""
    import jax

    return host_array if sharding.is_fully_addressable else jax.device_put(host_array, sharding)
