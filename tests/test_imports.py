"""Which way imports may run (design.md): `import d4rt` and the runtime never import torch."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["d4rt", "d4rt.runtime", "d4rt.config", "d4rt.cli"])
def test_no_torch_import(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'lightning', 'd4rt.models') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import {module} pulled in {out.strip()}"
