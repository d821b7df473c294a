"""Evaluate D4RT on clips (the seed's command line): the same as `d4rt evaluate` (cli/evaluate.py), whose
flags it takes (the seed's snake_case spellings are accepted).

    python scripts/evaluate_d4rt.py --test-data runs/test20 --synthetic 20 --ckpt checkpoints/tiny-synthetic
"""

import sys

from d4rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
