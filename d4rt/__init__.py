"""d4rt: the D4RT 4D-reconstruction model, made fast to train, export and deploy.

``import d4rt`` does not import torch: the runtime (``d4rt.runtime``) must run on machines with numpy and an
engine library only. ``d4rt.D4RT`` imports torch when first touched.
"""

from pathlib import Path as _Path

# The package's other wings (runtime/, occupancy/, cli/, ...) are top-level folders of the repository, installed as
# d4rt.<name>. Run from the repository root, this source folder shadows the installed package (Python puts the
# current folder first on sys.path), so look for them beside it too: `import d4rt.runtime` then works from the
# root after `pip install ".[runtime]"` as well as after an editable install.
_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "runtime" / "__init__.py").is_file():
    __path__.append(str(_ROOT))  # noqa: F821 - a package's __path__

from d4rt.config import D4RTConfig  # noqa: E402

__version__ = "0.1.0"
__all__ = ["D4RT", "D4RTConfig", "__version__"]


def __getattr__(name: str):
    if name == "D4RT":
        from d4rt.models import D4RT

        return D4RT
    raise AttributeError(f"module 'd4rt' has no attribute {name!r}")
