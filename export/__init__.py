"""d4rt.export: split ONNX export (encoder + decoder graphs), parity checks and the TensorRT engine builder.

    >>> from d4rt.export import export_onnx, verify_export
    >>> manifest = export_onnx(model, "engines/", precision="fp32")
    >>> print(verify_export(model, "engines/").table())

Imports torch when a function is first used (``d4rt --help`` and the runtime's commands stay torch-free).
"""

_LAZY = {
    "export_onnx": "d4rt.export.onnx_export",
    "verify_export": "d4rt.export.parity",
    "ParityError": "d4rt.export.parity",
    "export_int8_qdq": "d4rt.export.int8_qdq",
    "build_engines": "d4rt.export.tensorrt",
    "EngineBuildOptions": "d4rt.export.tensorrt",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'd4rt.export' has no attribute {name!r}")
