"""The 4-D result in the browser (viser), torch-free: ``d4rt view RESULTS`` or these functions.

    >>> from d4rt.viewer import load_result, serve, write_recording
    >>> serve("results/")                                   # http://127.0.0.1:8080/ until Ctrl-C
    >>> write_recording(load_result("results/"), "rec/")    # rec/index.html opens without a server

viser is imported only when a scene is built, so ``import d4rt.viewer`` needs numpy alone.
"""

from d4rt.viewer.app import open_result, serve, start_server, write_recording
from d4rt.viewer.results import Result, ResultError, load_result

__all__ = ["Result", "ResultError", "load_result", "open_result", "serve", "start_server", "write_recording"]
