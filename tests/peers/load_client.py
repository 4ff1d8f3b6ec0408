"""HTTP/1.1 load client (stdlib http.client): THREADS keep-alive connections sending REQUESTS
requests in all, as fast as they can, against peers/http_server.py. Request i (counted over all
threads) is, by i % 3:
  0: POST /echo with a BODY_BYTES body  -> expects 200 and the same body back
  1: GET  /status/202                   -> expects 202 and b"status 202\\n"
  2: GET  /status/404                   -> expects 404 and b"status 404\\n"

Usage: load_client.py PORT THREADS REQUESTS BODY_BYTES

Prints one line per (method, path, status) it received as expected, "ok METHOD PATH STATUS COUNT",
then "error <what>" for each failed request, "failed N" (exceptions, unexpected statuses or bodies; the connection is then reopened) and
"connections N" (connections opened). Exits 0 unless the script itself breaks.
"""
import http.client
import sys
import threading
from collections import Counter

PORT, THREADS, REQUESTS, BODY_BYTES = (int(a) for a in sys.argv[1:5])
BODY = (b"0123456789abcdef" * (BODY_BYTES // 16 + 1))[:BODY_BYTES]
PLAN = [
    ("POST", "/echo", 200, BODY),
    ("GET", "/status/202", 202, b"status 202\n"),
    ("GET", "/status/404", 404, b"status 404\n"),
]

lock = threading.Lock()
ok = Counter()
failed = 0
errors = []
connections = 0
next_index = 0


def take():
    global next_index
    with lock:
        if next_index >= REQUESTS:
            return None
        i = next_index
        next_index += 1
        return i


def worker():
    global failed, connections
    conn = None
    while (i := take()) is not None:
        method, path, want_status, want_body = PLAN[i % len(PLAN)]
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
                conn.connect()
                with lock:
                    connections += 1
            if method == "POST":
                conn.request(method, path, body=BODY,
                             headers={"Content-Type": "application/octet-stream"})
            else:
                conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read()
            good = resp.status == want_status and body == want_body
            if not good:
                with lock:
                    errors.append(f"request {i} {method} {path}: {resp.status}, {len(body)} bytes")
            if resp.will_close:
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            with lock:
                errors.append(f"request {i} {method} {path}: {e!r}")
            good = False
            if conn is not None:
                conn.close()
            conn = None
        with lock:
            if good:
                ok[(method, path, want_status)] += 1
            else:
                failed += 1
    if conn is not None:
        conn.close()


threads = [threading.Thread(target=worker) for _ in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for (method, path, status), count in sorted(ok.items()):
    print("ok", method, path, status, count)
for error in errors:
    print("error", error)
print("failed", failed)
print("connections", connections, flush=True)
