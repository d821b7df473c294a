"""Evaluate D4RT on clips (the seed's command line). Same as `d4rt evaluate`; see d4rt/evaluation/evaluate.py.

    python scripts/test_d4rt.py --test_data_path clips/test --synthetic 20 --ckpt checkpoints/tiny-synthetic
"""

import argparse
import sys

from d4rt import command_evaluate

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    command_evaluate.add_arguments(parser)
    sys.exit(command_evaluate.run(parser.parse_args()))
