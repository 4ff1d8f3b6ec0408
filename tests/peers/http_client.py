"""HTTP/1.1 test client (stdlib http.client), printing one line per request:
"<status> <body bytes> <local port>".

Usage: http_client.py [--tls] MODE PORT ...   (--tls: HTTPS, certificate not verified)
  http_client.py keepalive PORT PATH...   one keep-alive connection, one GET per PATH, in order
  http_client.py parallel PORT N PATH     N threads, each its own connection and one GET, all
                                          connected before any request is sent (a barrier)
  http_client.py headers PORT PATH 'Name: value'...
                                          one GET with these extra request headers
  http_client.py stdin PORT               connects at once and prints "connected <local port>", then
                                          one GET per "GET <path>" line on stdin, on that one
                                          keep-alive connection, until "quit" or end of input
Exits non-zero when a request fails (not on 4xx/5xx).
"""
import http.client
import ssl
import sys
import threading

TLS = len(sys.argv) > 1 and sys.argv[1] == "--tls"
if TLS:
    del sys.argv[1]


def connection(port, timeout):
    """An HTTP/1.1 connection to 127.0.0.1:port; HTTPS (unverified: the tests' certificates are
    self-signed) with --tls."""
    if TLS:
        return http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=ssl._create_unverified_context()
        )
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def keepalive(port, paths):
    conn = connection(port, 30)
    for path in paths:
        conn.request("GET", path)
        local_port = conn.sock.getsockname()[1]  # before the response: a `Connection: close` drops sock
        resp = conn.getresponse()
        body = resp.read()
        print(resp.status, len(body), local_port, flush=True)
    conn.close()


def parallel(port, n, path):
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        conn = connection(port, 60)
        conn.connect()
        barrier.wait(timeout=60)
        conn.request("GET", path)
        local_port = conn.sock.getsockname()[1]
        resp = conn.getresponse()
        body = resp.read()
        results[i] = (resp.status, len(body), local_port)
        conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(r is None for r in results):
        sys.exit("some requests failed")
    for status, size, local_port in results:
        print(status, size, local_port)


def headers(port, path, lines):
    conn = connection(port, 30)
    extra = {}
    for line in lines:
        name, value = line.split(":", 1)
        extra[name.strip()] = value.strip()
    conn.request("GET", path, headers=extra)
    local_port = conn.sock.getsockname()[1]
    resp = conn.getresponse()
    body = resp.read()
    print(resp.status, len(body), local_port, flush=True)
    conn.close()


def from_stdin(port):
    conn = connection(port, 30)
    conn.connect()
    local_port = conn.sock.getsockname()[1]
    print("connected", local_port, flush=True)
    for line in sys.stdin:
        words = line.split()
        if words == ["quit"]:
            break
        if len(words) != 2 or words[0] != "GET":
            sys.exit(f"bad command {line!r}")
        if conn.sock is None or conn.sock.getsockname()[1] != local_port:
            sys.exit("the keep-alive connection was lost")
        conn.request("GET", words[1])
        resp = conn.getresponse()
        body = resp.read()
        print(resp.status, len(body), local_port, flush=True)
    conn.close()


mode, port = sys.argv[1], int(sys.argv[2])
if mode == "keepalive":
    keepalive(port, sys.argv[3:])
elif mode == "parallel":
    parallel(port, int(sys.argv[3]), sys.argv[4])
elif mode == "headers":
    headers(port, sys.argv[3], sys.argv[4:])
elif mode == "stdin":
    from_stdin(port)
else:
    sys.exit(f"unknown mode {mode}")
