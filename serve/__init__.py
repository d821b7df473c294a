"""D4RT as a service: Triton Inference Server models over ``d4rt.runtime`` and a client with the runtime's surface.

    d4rt serve exported/ --port 8000                    # the server (needs the ``serve`` extra)
    d4rt serve exported/ --replicas 2 --port 8000       # 2 servers behind nginx, scene affinity by routing key
    >>> from d4rt.serve import Client
    >>> rt = Client("127.0.0.1:8000"); scene = rt.encode(frames); depth = rt.depth(scene, 0)

Nothing here imports torch; PyTriton and tritonclient are imported only when a server or client is made.
"""

from d4rt.serve.client import ROUTE_HEADER, Client, RemoteScene, ServerUnavailableError
from d4rt.serve.replicas import ReplicaSet
from d4rt.serve.scene_store import SceneStore, UnknownSceneError

__all__ = ["Client", "ROUTE_HEADER", "RemoteScene", "ReplicaSet", "SceneStore", "ServerUnavailableError",
           "UnknownSceneError"]
