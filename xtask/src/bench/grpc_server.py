"""The gRPC server of `cargo xtask bench` (xtask/src/bench/grpc.rs): `sonde.bench.Echo/Unary` on
127.0.0.1:PORT over h2c (insecure), returning each request message as its response.

    python3 grpc_server.py PORT

grpc.aio: one asyncio thread runs the handlers (the thread-pool server is slower under the GIL).
A generic handler over raw bytes (no codegen, no protobuf) and no output per call, so the server
makes no syscalls of its own beyond the calls' socket I/O. Prints `listening PORT` once bound; ends
on SIGTERM.
"""

import asyncio
import sys

import grpc

SERVICE = "sonde.bench.Echo"


async def unary(request, context):
    return request


async def serve(port):
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(unary)}
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound != port:
        sys.exit(f"grpc_server.py: could not bind 127.0.0.1:{port} (got {bound})")
    await server.start()
    print(f"listening {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(serve(int(sys.argv[1])))
