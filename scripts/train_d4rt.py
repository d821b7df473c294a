"""Train D4RT with Lightning (the seed's command line). Same as `d4rt train`; see d4rt/training/fit.py.

    python scripts/train_d4rt.py --preset tiny --synthetic 800 --max_steps 3000 --batch_size 2
    python scripts/train_d4rt.py --train_data_path clips/train --val_data_path clips/val --devices 8 --strategy ddp
"""

import argparse
import sys

from d4rt import command_train

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    command_train.add_arguments(parser)
    sys.exit(command_train.run(parser.parse_args()))
