"""Importing ``flax.nnx`` without importing IPython.

``flax.nnx.reprlib`` asks IPython at import time whether it runs inside an IPython shell (to colour its reprs),
and importing IPython to answer costs 0.08-0.3 s of a CPU start-up (more on a busy machine). A process in which
IPython is not imported yet runs no IPython shell (a shell or notebook kernel imports it first), so the answer is
"no" without importing it: the import is blocked while flax loads, and flax takes the ImportError as that "no".
treescope (imported by flax) likewise records IPython as absent, so its notebook display integration stays off in
such a process, as it would have without IPython installed; in a notebook nothing changes.
"""

from __future__ import annotations

import sys


def import_flax_nnx() -> None:
    """Import ``flax.nnx`` (the same module and settings as a plain import), skipping the IPython import when no
    IPython shell can be running."""
    if "flax.nnx" in sys.modules or "IPython" in sys.modules:
        import flax.nnx
        return
    sys.modules["IPython"] = None  # a None entry makes ``import IPython`` raise ImportError
    try:
        import flax.nnx  # noqa: F401
    finally:
        if "IPython" in sys.modules and sys.modules["IPython"] is None:
            del sys.modules["IPython"]
