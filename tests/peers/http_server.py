"""HTTP/1.1 test server (stdlib only): keep-alive, fixed statuses, chunked bodies, echo.

Usage: http_server.py PORT [HOST]   (listens on HOST:PORT; HOST defaults to 127.0.0.1, and an
                                     IPv6 address such as ::1 gives an AF_INET6 socket)

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


port = int(sys.argv[1])
host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
(Server6 if ":" in host else Server)((host, port), Handler).serve_forever()
