"""How the servicers are added to the grpc.aio server."""
from __future__ import annotations

import grpc


class GenericOnly:
    """Adds services to a grpc.aio server as generic handlers only. The generated add_*_to_server
    also registers each method, and grpc.aio's server then keeps one pending call per registered
    method (83 in taskhub) and waits on all of them for every incoming call: an asyncio.wait over
    83 futures per RPC. Generic handlers share one pending call, and a method is found by a dict
    lookup per service."""

    def __init__(self, server: grpc.aio.Server):
        self._server = server

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        pass  # served by the generic handler the same call added
