"""Train D4RT with Lightning (the seed's command line). Same as `d4rt train`; see d4rt/training/fit.py.

    python scripts/train_d4rt.py --preset tiny --synthetic 800 --max_steps 3000 --batch_size 2
    python scripts/train_d4rt.py --train_data_path clips/train --val_data_path clips/val --devices 8 --strategy ddp
"""

import sys

from d4rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
