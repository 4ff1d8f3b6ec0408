"""A TCP server and client (one process, two threads) exchanging bytes that are not valid HTTP.

Usage: raw_tcp.py MODE PORT
  binary     both sides send random-looking binary frames, three round trips on one connection
  malformed  both sides send text that starts like HTTP/1.1 and then breaks the grammar
Prints "done" and exits 0 once every exchange completed.
"""
import socket
import sys
import threading

MODE, PORT = sys.argv[1], int(sys.argv[2])

EXCHANGES = {
    "binary": [
        (bytes(range(256)) * 2, b"\x00\xff\x13\x37" * 64),
        (b"\x16\x03\x01\x00\x05hello", b"\x15\x03\x03\x00\x02\x02\x28"),
        (b"\xde\xad\xbe\xef" * 100, b"\x00" * 10),
    ],
    "malformed": [
        (
            b"GET /broken HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Without Colon\x00\x01\r\n\r\n",
            b"HTTP/1.1 99999 NOPE\r\n\x00\x00garbage\r\n\r\n",
        ),
        (b"GET /also-broken HTTP/7.Q\r\n\r\n", b"HTTP/1.1 2OO OK\r\nContent-Length: banana\r\n\r\n"),
    ],
}[MODE]


def recv_exactly(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed early")
        buf += chunk
    return buf


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", PORT))
listener.listen(1)


def serve():
    conn, _ = listener.accept()
    with conn:
        for request, response in EXCHANGES:
            assert recv_exactly(conn, len(request)) == request
            conn.sendall(response)


server = threading.Thread(target=serve)
server.start()
with socket.create_connection(("127.0.0.1", PORT), timeout=30) as client:
    for request, response in EXCHANGES:
        client.sendall(request)
        assert recv_exactly(client, len(response)) == response
server.join()
listener.close()
print("done")
