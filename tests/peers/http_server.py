"""HTTP/1.1 test server (stdlib only): keep-alive, fixed statuses, chunked bodies, echo.

Usage: http_server.py PORT [HOST] [--tls CERT KEY]
  listens on HOST:PORT; HOST defaults to 127.0.0.1, and an IPv6 address such as ::1 gives an
  AF_INET6 socket. With --tls, every connection is HTTPS (ssl.SSLContext with the PEM certificate
  and key; the handshake runs in the connection's own thread, so a client that connects and sends
  nothing, like the harness's readiness probe, stalls no one).

Routes:
  GET  /status/<code>  -> <code> with body b"status <code>\n" and a Content-Length (query ignored)
  GET  /chunked        -> 200, Transfer-Encoding: chunked, CHUNKS below (600 decoded bytes)
  POST /echo           -> 200, the request body echoed back with a Content-Length
  anything else        -> 404
"""
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Decoded size 600 bytes; tests/src/peers.rs mirrors it as CHUNKED_BODY_BYTES.
CHUNKS = [b"a" * 100, b"b" * 200, b"c" * 300]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path.startswith("/status/") and path[len("/status/"):].isdigit():
            code = int(path[len("/status/"):])
            self._send(code, b"status %d\n" % code)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, b"not found\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if urlsplit(self.path).path == "/echo":
            self._send(200, body)
        else:
            self._send(404, b"not found\n")

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog of 5 resets connections when many clients connect at
    # once (peers/load_client.py opens 64).
    request_queue_size = 1024


class Server6(Server):
    address_family = socket.AF_INET6


class TlsMixin:
    """Wraps each accepted connection in TLS in its handler thread (before the handler runs)."""

    tls_context = None

    def finish_request(self, request, client_address):
        try:
            tls = self.tls_context.wrap_socket(request, server_side=True)
        except OSError:
            return  # no handshake (a bare TCP probe, or a client that gave up)
        with tls:
            self.RequestHandlerClass(tls, client_address, self)


args = sys.argv[1:]
tls_files = None
if "--tls" in args:
    i = args.index("--tls")
    tls_files = args[i + 1 : i + 3]
    del args[i : i + 3]
port = int(args[0])
host = args[1] if len(args) > 1 else "127.0.0.1"
server_class = Server6 if ":" in host else Server
if tls_files:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    server_class = type(
        "Tls" + server_class.__name__, (TlsMixin, server_class), {"tls_context": context}
    )
server_class((host, port), Handler).serve_forever()
