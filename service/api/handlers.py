"""Serving our services through the guard, from their descriptors, before any request is read.

grpcio's own handler for a unary method (what the generated `add_*Servicer_to_server` registers)
reads and decodes the request before any code of ours runs, and the call holds one of grpcio's
concurrent-call slots while it waits. A client can open a stream to a unary method, send its
headers and never the message: nothing of ours would see that call until the message came. So
every method is registered here instead as a client-streaming handler over raw bytes. The guard
(`smtpconfig.api.calls.Guard.run`) then runs at call start: identity and permission come from the
metadata and the transport, which are known before any message, so a call without them is ended
at once. Only then is the one request message read, under a deadline, and decoded.

Server-streaming methods (WatchSmtp) are registered the same way, as bidirectional handlers over
raw bytes, and served through `Guard.stream`. Every method of a service must be declared with
`@rpc` on the servicer, with `stream=True` exactly when it streams its responses, and none may
stream its requests: the server refuses to start otherwise, so no method can be served without the
guard.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from smtpconfig.api.calls import Guard, RpcSpec


class Guarded(NamedTuple):
    """What serves one unary method of ours: `Guard.run`'s arguments but the call's context, and
    the answer's serialiser. The route table keeps them (`Routes.guarded`) for tools that take a
    running server's handling apart (`bench.stages`)."""

    guard: Guard
    spec: RpcSpec
    name: str  # the method's name in logs, metrics and the audit trail
    method: Callable[..., Awaitable[Any]]  # the servicer's bound method
    decode: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]


def register(table: MethodTable, servicer: Any, service: ServiceDescriptor) -> None:
    """Serve every method of `service` with `servicer`'s `@rpc` method of that name."""
    served = {}
    for method in service.methods:
        handler, guarded = _handler(servicer, method)
        served[method.name] = handler
        if guarded is not None:
            table.guarded[f"/{service.full_name}/{method.name}"] = guarded
    table.add_registered_method_handlers(service.full_name, served)


class MethodTable(grpc.aio.Server):
    """Every method the server serves, ours and grpcio's (health, reflection), in one dict, handed
    to the server as one generic handler (`handler`).

    Why not grpcio's registered methods, as the generated `add_*_to_server` functions make them:
    grpc.aio's server keeps one pending request per registered method and, for every call it
    accepts, waits on all of them again (`asyncio.wait` over some twenty futures, a done-callback
    added to and removed from each). That cost a cached GetSmtp more than the guard and the
    servicer together; with one generic handler there is one pending request, as on a bare server.
    A call's method is then found with one dict lookup.

    It stands in for the server only while the services are added (the generated functions and
    `enable_server_reflection` take a server): it collects what they register and serves nothing.
    """

    def __init__(self) -> None:
        self._routes: dict[str, grpc.RpcMethodHandler] = {}
        self._others: list[grpc.GenericRpcHandler] = []
        self.guarded: dict[str, Guarded] = {}

    def add_registered_method_handlers(self, service_name: str, method_handlers) -> None:
        for name, handler in method_handlers.items():
            self._routes[f"/{service_name}/{name}"] = handler

    def add_generic_rpc_handlers(self, generic_rpc_handlers) -> None:
        # The generated functions add a generic handler too, for the same methods: it is asked
        # only for a method the table does not hold (and then answers None as well).
        self._others.extend(generic_rpc_handlers)

    def handler(self) -> Routes:
        """The one handler to give the real server."""
        return Routes(dict(self._routes), tuple(self._others), dict(self.guarded))

    def _collects_only(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("a MethodTable only collects method handlers; give `handler()` to a real server")

    add_insecure_port = add_secure_port = start = stop = wait_for_termination = _collects_only


class Routes(grpc.GenericRpcHandler):
    """The server's one generic handler: a method's handler by its path, else grpcio's others."""

    def __init__(
        self, routes: dict[str, grpc.RpcMethodHandler], others: tuple[grpc.GenericRpcHandler, ...],
        guarded: dict[str, Guarded],
    ) -> None:
        self._routes = routes
        self._others = others
        self._guarded = guarded

    def guarded(self, path: str) -> Guarded | None:
        """What serves our unary method `path` (`/package.Service/Method`), or None."""
        return self._guarded.get(path)

    def replace(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """Serve `path` with `handler` from the next call on; return the handler it replaces. For
        measuring tools only (`bench.stages` serves a method with parts of its handling left
        out): a server serves nothing unguarded on its own."""
        replaced = self._routes[path]
        self._routes[path] = handler
        return replaced

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        found = self._routes.get(handler_call_details.method)
        if found is not None:
            return found
        for other in self._others:
            found = other.service(handler_call_details)
            if found is not None:
                return found
        return None


def _handler(servicer: Any, method: MethodDescriptor) -> tuple[grpc.RpcMethodHandler, Guarded | None]:
    where = f"{method.containing_service.full_name}/{method.name}"
    if method.client_streaming:
        raise TypeError(f"{where} streams its requests; smtpconfig.api.handlers serves one request per call only")
    spec: RpcSpec | None = getattr(getattr(type(servicer), method.name, None), "rpc_spec", None)
    if spec is None:
        raise TypeError(f"{where} has no @rpc method on {type(servicer).__name__}; it would be served unguarded")
    if spec.stream != method.server_streaming:
        raise TypeError(f"{where}: @rpc(stream=...) must say whether the method streams its responses")
    # Built once per method, so a call costs no lookups or string formatting here.
    guard: Guard = servicer.guard
    name = f"{servicer.SERVICE}/{method.name}"
    serve = getattr(servicer, method.name)
    decode: Callable[[bytes], Any] = GetMessageClass(method.input_type).FromString

    serializer = GetMessageClass(method.output_type).SerializeToString
    if spec.stream:
        async def stream(_requests, context: grpc.aio.ServicerContext):
            async for message in guard.stream(spec, name, serve, decode, context):
                yield message

        return grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=None, response_serializer=serializer
        ), None

    def serialize(response) -> bytes:
        # A method may answer with its response already serialised (ResolveSmtp: `_Revealed`).
        return response if response.__class__ is bytes else serializer(response)

    async def handle(_requests, context: grpc.aio.ServicerContext):
        # The request iterator is left alone: the guard reads the message itself, after its checks.
        return await guard.run(spec, name, serve, decode, context)

    return (
        grpc.stream_unary_rpc_method_handler(handle, request_deserializer=None, response_serializer=serialize),
        Guarded(guard, spec, name, serve, decode, serialize),
    )
