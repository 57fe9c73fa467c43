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

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from smtpconfig.api.calls import Guard, RpcSpec


def register(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Serve every method of `service` with `servicer`'s `@rpc` method of that name."""
    handlers = {method.name: _handler(servicer, method) for method in service.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _handler(servicer: Any, method: MethodDescriptor) -> grpc.RpcMethodHandler:
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

        return grpc.stream_stream_rpc_method_handler(stream, request_deserializer=None, response_serializer=serializer)

    async def handle(_requests, context: grpc.aio.ServicerContext):
        # The request iterator is left alone: the guard reads the message itself, after its checks.
        return await guard.run(spec, name, serve, decode, context)

    return grpc.stream_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=serializer,
    )
