"""Which way imports may run (docs/design.md): the library never imports the CLI; the runtime and occupancy never
import torch; ``import d4rt`` and the runtime load no torch at run time either.

The static walk reads every import statement of every library module, the lazy ones inside functions included, so
a forbidden import cannot hide in a branch the tests do not reach.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {"d4rt": "d4rt", "kernels": "d4rt.kernels", "export": "d4rt.export", "runtime": "d4rt.runtime",
            "occupancy": "d4rt.occupancy", "serve": "d4rt.serve", "viewer": "d4rt.viewer", "cli": "d4rt.cli"}
TORCH_WORLD = ("torch", "lightning", "pytorch_lightning", "triton", "d4rt.models", "d4rt.training",
               "d4rt.evaluation", "d4rt.kernels", "d4rt.export", "d4rt.checkpoint", "d4rt.opend4rt")
# The runtime's optional torch backends (the eager model; AOTInductor packages) are the runtime modules allowed to
# reach torch, each imported only when its backend is asked for.
TORCH_BACKENDS = ("d4rt.runtime.backend_torch", "d4rt.runtime.backend_aoti")


def library_modules():
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def imports_of(path: Path, module: str) -> set[str]:
    """Every module named by an import statement in the file, relative imports resolved."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


MODULES = dict(library_modules())


def test_the_walk_sees_the_house():
    assert {"d4rt.runtime.runtime", "d4rt.occupancy.grid", "d4rt.viewer.app", "d4rt.cli.infer",
            "d4rt.training.fit"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("d4rt.cli")))
def test_library_never_imports_the_cli(module):
    bad = sorted(i for i in imports_of(MODULES[module], module) if under(i, ["d4rt.cli"]))
    assert not bad, f"{module} imports the CLI: {bad}"


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if under(m, ["d4rt.runtime", "d4rt.occupancy", "d4rt.serve", "d4rt.viewer"]))
)
def test_runtime_occupancy_serve_and_viewer_stay_torch_free(module):
    imported = imports_of(MODULES[module], module)
    if module in TORCH_BACKENDS:
        return
    bad = sorted(i for i in imported if under(i, TORCH_WORLD))
    assert not bad, f"{module} imports {bad}: the runtime must run with numpy and an engine library only"
    if under(module, ["d4rt.runtime"]):
        upward = sorted(i for i in imported if under(i, ["d4rt.occupancy", "d4rt.serve", "d4rt.viewer",
                                                                "d4rt.benchmarking"]))
        assert not upward, f"{module} imports {upward}: the runtime is the lowest layer"


@pytest.mark.parametrize("module", ["d4rt", "d4rt.runtime", "d4rt.occupancy", "d4rt.viewer", "d4rt.config",
                                    "d4rt.cli"])
def test_no_torch_at_import_time(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'lightning', 'd4rt.models') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import {module} pulled in {out.strip()}"
