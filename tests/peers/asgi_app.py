"""Tiny ASGI app for hypercorn (tests/tests/http2_hypercorn.rs), no framework.

Run: python3 -m hypercorn --workers 0 --bind 127.0.0.1:PORT PATH/asgi_app.py:app
  (`--workers 0`: hypercorn serves in its own process, so the server's pid is the interpreter's.)

Routes (GET):
  /ok       -> 200, body OK_BODY below, Content-Length
  /missing  -> 404, body MISSING_BODY below, Content-Length
  anything else -> 404 like /missing

Every answered request prints one line on stdout, flushed before the response is sent:
  request HTTP_VERSION CLIENT_PORT METHOD PATH STATUS BODY_BYTES USER_AGENT
(USER_AGENT last, `-` when absent: it may hold spaces), so a test can check its spans against what
the server saw, including the HTTP version hypercorn gave the app (`1.1` or `2`).
"""
import sys

# tests/src/peers.rs mirrors these sizes (HYPERCORN_OK_BYTES, HYPERCORN_MISSING_BYTES).
OK_BODY = b"ok from hypercorn\n"
MISSING_BODY = b"not found\n"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    # Drain the request body (none in these tests).
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    if scope["path"] == "/ok":
        status, body = 200, OK_BODY
    else:
        status, body = 404, MISSING_BODY
    user_agent = "-"
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value.decode("latin1")
    client_port = scope["client"][1] if scope.get("client") else 0
    print(
        f"request {scope['http_version']} {client_port} {scope['method']} {scope['path']} "
        f"{status} {len(body)} {user_agent}",
        flush=True,
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    sys.exit("run me through hypercorn: python3 -m hypercorn --workers 0 ... asgi_app.py:app")
