#!/usr/bin/env python3
"""gRPC peer for the end-to-end tests: a grpcio server and client of `sonde.test.Echo`.

No codegen: messages are raw bytes (no (de)serializers), the service is a generic handler.

    grpc_peer.py serve PORT
        Serves `sonde.test.Echo` on 127.0.0.1:PORT (insecure, h2c) with 32 worker threads. Prints
        `listening PORT` once bound, then one line per call as its handler starts:
        `call METHOD PEER INFLIGHT` (PEER as grpc gives it, `ipv4:127.0.0.1:54321`; INFLIGHT the
        calls in their handlers at that moment, this one included).

    grpc_peer.py call PORT SPEC...
        One channel to 127.0.0.1:PORT (so one HTTP/2 connection), the SPECs run in order. One line
        per call, in order: `METHOD STATUS RESPONSES RESPONSE_BYTES` (STATUS a grpc status name:
        `OK`, `NOT_FOUND`, `DEADLINE_EXCEEDED`, ...). Exits 0 when every call ended as its SPEC
        expects, 1 otherwise (with the reason on stderr).

SPECs:
    unary[:BYTES]             Unary: one BYTES-byte request (default 16), echoed. OK.
    server_stream             ServerStream: one request, 3 responses. OK.
    client_stream             ClientStream: 3 requests, one response (their concatenation). OK.
    bidi                      BidiStream: 3 requests, each echoed as it comes. OK.
    fail[:CODE]               Fail: the server aborts with CODE (default NOT_FOUND).
    slow:MS                   Slow with an MS ms deadline: the server handler outlives it, the
                              client gets DEADLINE_EXCEEDED.
    concurrent:N[:HOLD_MS]    N Unary calls (16-byte requests) started together on the channel
                              (futures), then awaited; the server holds each HOLD_MS ms (default
                              100, metadata `x-hold-ms`) so all N streams are open at once. OK each.
    wait:PATH                 No call: waits (up to 120 s) until the file PATH exists, the channel
                              kept open and idle, then goes on with the next SPEC. Prints nothing,
                              so a harness knows the calls before it are done from their lines.
"""

import os
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "sonde.test.Echo"
STREAM_MESSAGES = 3
SLOW_SERVER_LIMIT_S = 5.0
WAIT_LIMIT_S = 120.0

_lock = threading.Lock()
_inflight = 0
_out_lock = threading.Lock()


def _log(line):
    # One write per line under a lock: print() from several handler threads interleaves.
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class _Tracked:
    """Counts the calls in their handlers and logs each one's start."""

    def __init__(self, method, context):
        self.method = method
        self.context = context

    def __enter__(self):
        global _inflight
        with _lock:
            _inflight += 1
            now = _inflight
        _log(f"call {self.method} {self.context.peer()} {now}")
        return self

    def __exit__(self, *exc):
        global _inflight
        with _lock:
            _inflight -= 1
        return False


def _hold(context):
    for key, value in context.invocation_metadata():
        if key == "x-hold-ms":
            time.sleep(int(value) / 1000.0)


def unary(request, context):
    with _Tracked("Unary", context):
        _hold(context)
        return request


def server_stream(request, context):
    with _Tracked("ServerStream", context):
        for i in range(STREAM_MESSAGES):
            yield request + str(i).encode()


def client_stream(request_iterator, context):
    with _Tracked("ClientStream", context):
        return b"".join(request_iterator)


def bidi_stream(request_iterator, context):
    with _Tracked("BidiStream", context):
        for request in request_iterator:
            yield request


def fail(request, context):
    with _Tracked("Fail", context):
        code = getattr(grpc.StatusCode, request.decode() or "NOT_FOUND")
        context.abort(code, f"sonde test: {code.name}")


def slow(request, context):
    with _Tracked("Slow", context):
        # Outlive the client's deadline; stop early once grpc cancels the call (deadline or the
        # client's RST_STREAM), so no worker thread is held for long.
        limit = time.monotonic() + SLOW_SERVER_LIMIT_S
        while context.is_active() and time.monotonic() < limit:
            time.sleep(0.01)
        return request


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "BidiStream": grpc.stream_stream_rpc_method_handler(bidi_stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound != port:
        sys.exit(f"grpc_peer.py: could not bind 127.0.0.1:{port} (got {bound})")
    server.start()
    _log(f"listening {port}")
    server.wait_for_termination()


def _path(method):
    return f"/{SERVICE}/{method}"


def _report(method, code, responses):
    _log(f"{method} {code.name} {len(responses)} {sum(len(r) for r in responses)}")


def _outcome(call_fn):
    """Runs call_fn() -> list of responses; returns (code, responses)."""
    try:
        return grpc.StatusCode.OK, call_fn()
    except grpc.RpcError as e:
        return e.code(), []


def call(port, specs):
    failures = []
    # No proxy from the environment: the call must go straight to the server's port.
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
    with channel:
        for spec in specs:
            name, _, arg = spec.partition(":")
            if name == "unary":
                request = b"u" * (int(arg) if arg else 16)
                stub = channel.unary_unary(_path("Unary"))
                code, responses = _outcome(lambda: [stub(request, timeout=60)])
                expect, method = grpc.StatusCode.OK, "Unary"
                if code == expect and responses != [request]:
                    failures.append(f"{spec}: the echo differs from the request")
            elif name == "server_stream":
                stub = channel.unary_stream(_path("ServerStream"))
                code, responses = _outcome(lambda: list(stub(b"s", timeout=60)))
                expect, method = grpc.StatusCode.OK, "ServerStream"
                if code == expect and len(responses) != STREAM_MESSAGES:
                    failures.append(f"{spec}: {len(responses)} responses")
            elif name == "client_stream":
                stub = channel.stream_unary(_path("ClientStream"))
                requests = [b"c%d" % i for i in range(STREAM_MESSAGES)]
                code, responses = _outcome(lambda: [stub(iter(requests), timeout=60)])
                expect, method = grpc.StatusCode.OK, "ClientStream"
                if code == expect and responses != [b"".join(requests)]:
                    failures.append(f"{spec}: unexpected response {responses!r}")
            elif name == "bidi":
                stub = channel.stream_stream(_path("BidiStream"))
                requests = [b"b%d" % i for i in range(STREAM_MESSAGES)]
                code, responses = _outcome(lambda: list(stub(iter(requests), timeout=60)))
                expect, method = grpc.StatusCode.OK, "BidiStream"
                if code == expect and responses != requests:
                    failures.append(f"{spec}: unexpected responses {responses!r}")
            elif name == "fail":
                wanted = arg or "NOT_FOUND"
                stub = channel.unary_unary(_path("Fail"))
                code, responses = _outcome(lambda: [stub(wanted.encode(), timeout=60)])
                expect, method = getattr(grpc.StatusCode, wanted), "Fail"
            elif name == "slow":
                stub = channel.unary_unary(_path("Slow"))
                code, responses = _outcome(lambda: [stub(b"z", timeout=int(arg) / 1000.0)])
                expect, method = grpc.StatusCode.DEADLINE_EXCEEDED, "Slow"
            elif name == "concurrent":
                count, _, hold = arg.partition(":")
                stub = channel.unary_unary(_path("Unary"))
                metadata = (("x-hold-ms", hold or "100"),)
                pending = [
                    stub.future(b"%015d" % i + b"c", timeout=60, metadata=metadata)
                    for i in range(int(count))
                ]
                for i, fut in enumerate(pending):
                    code, responses = _outcome(lambda: [fut.result()])
                    _report("Unary", code, responses)
                    if code != grpc.StatusCode.OK:
                        failures.append(f"{spec} #{i}: {code.name}")
                    elif responses != [b"%015d" % i + b"c"]:
                        failures.append(f"{spec} #{i}: the echo differs from the request")
                continue
            elif name == "wait":
                limit = time.monotonic() + WAIT_LIMIT_S
                while not os.path.exists(arg):
                    if time.monotonic() >= limit:
                        sys.exit(f"grpc_peer.py: {arg} did not appear within {WAIT_LIMIT_S} s")
                    time.sleep(0.01)
                continue
            else:
                sys.exit(f"grpc_peer.py: unknown spec {spec!r}")
            _report(method, code, responses)
            if code != expect:
                failures.append(f"{spec}: {code.name}, want {expect.name}")
    for f in failures:
        print(f"grpc_peer.py: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "call":
        call(int(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
