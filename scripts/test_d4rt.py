"""Evaluate D4RT on clips (the seed's command line). Same as `d4rt evaluate`; see d4rt/evaluation/evaluate.py.

    python scripts/test_d4rt.py --test_data_path clips/test --synthetic 20 --ckpt checkpoints/tiny-synthetic
"""

import sys

from d4rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
