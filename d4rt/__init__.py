"""d4rt: the D4RT 4D-reconstruction model, made fast to train, export and deploy.

``import d4rt`` does not import torch: the runtime (``d4rt.runtime``) must run on machines with numpy and an
engine library only. ``d4rt.D4RT`` imports torch when first touched.
"""

from d4rt.config import D4RTConfig

__version__ = "0.1.0"
__all__ = ["D4RT", "D4RTConfig", "__version__"]


def __getattr__(name: str):
    if name == "D4RT":
        from d4rt.models import D4RT

        return D4RT
    raise AttributeError(f"module 'd4rt' has no attribute {name!r}")
