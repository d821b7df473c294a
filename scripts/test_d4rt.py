"""Deprecated name of scripts/evaluate_d4rt.py (kept one release): warns, then evaluates as it does."""

import sys

from d4rt.cli import main

if __name__ == "__main__":
    print("scripts/test_d4rt.py is deprecated; use scripts/evaluate_d4rt.py (same flags)", file=sys.stderr)
    sys.exit(main(["evaluate", *sys.argv[1:]]))
