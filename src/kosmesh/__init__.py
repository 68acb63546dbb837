"""kOS Mesh: a federated peer-to-peer mesh for AI agents.

Layers, bottom to top: ``identity`` (keys, peer ids, DIDs), ``wire`` (libp2p-compatible
TCP + Noise + yamux), ``klp`` (signed Kind Link Protocol messages), ``node`` (the running
process), ``api`` (local control API) and ``cli``.
"""

__version__ = "0.1.0"

from typing import Any

__all__ = ["Node", "__version__"]


def __getattr__(name: str) -> Any:
    # lazy, so `kosmesh --help` does not pay for the whole stack
    if name == "Node":
        from kosmesh.node.node import Node

        return Node
    raise AttributeError(name)
