"""vLLM's ``vllm.utils`` names that offline scripts import (``FlexibleArgumentParser``)."""

from jaxllm.utils.argparse_utils import FlexibleArgumentParser

__all__ = ["FlexibleArgumentParser"]
