"""``python -m d4rt.cli``: the same as the ``d4rt`` command."""

import sys

from d4rt.cli import main

sys.exit(main())
