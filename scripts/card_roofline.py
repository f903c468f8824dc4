"""Add the card's own roofline (jaxllm/bench/card_roofline.py) to the saved results of a benchmark folder, from
the command each result records; prints the files it changed.

    python scripts/card_roofline.py benchmarks/h100
"""

import sys

from jaxllm.bench.card_roofline import add_to_saved

if __name__ == "__main__":
    for path in add_to_saved(sys.argv[1]):
        print(path)
