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
# reach torch, each imported only when its backend is asked for: torch (and the model) only, inside functions.
TORCH_BACKENDS = ("d4rt.runtime.backend_torch", "d4rt.runtime.backend_aoti")
TORCH_BACKENDS_MAY_IMPORT = ("torch", "d4rt.models", "d4rt.checkpoint")  # never lightning, training, export, kernels


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


def module_level_imports(path: Path) -> set[str]:
    """Modules imported by the file's top-level statements (absolute imports; the lazy ones inside functions and
    classes left out)."""
    found = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
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
        # torch and the model only, and only inside functions: importing d4rt.runtime still loads no torch
        bad = sorted(i for i in imported if under(i, TORCH_WORLD) and not under(i, TORCH_BACKENDS_MAY_IMPORT))
        assert not bad, f"{module} imports {bad}: a torch backend may reach torch and the model, nothing more"
        eager = sorted(i for i in module_level_imports(MODULES[module]) if under(i, TORCH_WORLD))
        assert not eager, f"{module} imports {eager} at module level: import them inside the functions that run"
    else:
        bad = sorted(i for i in imported if under(i, TORCH_WORLD))
        assert not bad, f"{module} imports {bad}: the runtime must run with numpy and an engine library only"
    if under(module, ["d4rt.runtime"]):
        upward = sorted(i for i in imported if under(i, ["d4rt.occupancy", "d4rt.serve", "d4rt.viewer",
                                                                "d4rt.benchmarking"]))
        assert not upward, f"{module} imports {upward}: the runtime is the lowest layer"


# The core package's modules (d4rt/, installed as d4rt.*): the layer above the runtime.
CORE = ("d4rt.config", "d4rt.data", "d4rt.models", "d4rt.training", "d4rt.evaluation", "d4rt.checkpoint",
        "d4rt.opend4rt", "d4rt.memory_plan", "d4rt.benchmarking")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, ["d4rt.runtime"]) and m not in TORCH_BACKENDS))
def test_imports_run_one_way_the_runtime_is_the_lowest_layer(module):
    """The runtime imports only itself (and numpy, engine libraries): not the core package, not even its version;
    the core may import the runtime (its geometry, files, Runtime), never the other way round."""
    imported = imports_of(MODULES[module], module)
    upward = sorted(i for i in imported if i == "d4rt" or (i.startswith("d4rt.") and not under(i, ["d4rt.runtime"])))
    assert not upward, f"{module} imports {upward}: the runtime is the lowest layer, move what it needs down into it"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, ["d4rt.occupancy", "d4rt.serve", "d4rt.viewer"])))
def test_occupancy_serve_and_viewer_stand_on_the_runtime_only(module):
    bad = sorted(i for i in imports_of(MODULES[module], module) if i == "d4rt" or under(i, CORE))
    assert not bad, f"{module} imports {bad}: occupancy, serve and viewer use the runtime, not the core package"


def test_the_walk_sees_the_core():
    assert all(any(under(m, [c]) for m in MODULES) for c in CORE)


def test_one_version():
    from importlib.metadata import version

    import d4rt
    from d4rt.runtime.manifest import package_version

    assert d4rt.__version__ == version("d4rt") == package_version()


@pytest.mark.parametrize("module", ["d4rt", "d4rt.runtime", "d4rt.occupancy", "d4rt.viewer", "d4rt.config",
                                    "d4rt.cli"])
def test_no_torch_at_import_time(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'lightning', 'd4rt.models') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import {module} pulled in {out.strip()}"
