"""The D4RT model in PyTorch, one file per part."""

from d4rt.models.d4rt import D4RT

__all__ = ["D4RT"]
