"""`make demo`: the package's main job end to end on the embedded default."""

import sys

from d4rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
