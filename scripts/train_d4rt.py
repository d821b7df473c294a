"""Train D4RT with Lightning (the seed's command line). Same as `d4rt train`; see d4rt/training/fit.py.

    python scripts/train_d4rt.py --preset tiny --synthetic 800 --max-steps 3000 --batch-size 2
    python scripts/train_d4rt.py --train-data-path clips/train --val-data-path clips/val --devices 8 --strategy ddp
"""

import sys

from d4rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
