"""HTTP/1.1 test server (stdlib only): keep-alive, fixed statuses, chunked bodies, echo.

Usage: http_server.py PORT   (listens on 127.0.0.1:PORT)

Routes:
  GET  /status/<code>  -> <code> with body b"status <code>\n" and a Content-Length (query ignored)
  GET  /chunked        -> 200, Transfer-Encoding: chunked, CHUNKS below (600 decoded bytes)
  POST /echo           -> 200, the request body echoed back with a Content-Length
  anything else        -> 404
"""
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


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
