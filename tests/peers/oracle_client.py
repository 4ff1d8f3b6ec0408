"""Accuracy-oracle client (stdlib http.client): one keep-alive connection to 127.0.0.1:PORT (opened
again when the server closes it), the requests in argument order, one line per request:
"<status> <body bytes> <local port>" (the format of http_client.py).

Usage: oracle_client.py PORT REQUEST...
  REQUEST = METHOD,PATH,BODY_BYTES,SPLIT_MS      e.g. POST,/post/7,512,0   GET,/ok/9,0,20
  BODY_BYTES > 0: a body of that many bytes; http.client sends it in a send() after the head's.
  SPLIT_MS > 0:   the head is sent in two parts SPLIT_MS apart: the first part (request line, Host,
                  User-Agent) then, after the pause, the empty line and the body. The server reads
                  the request's first byte SPLIT_MS before it can answer.
Exits non-zero when a request fails (not on 4xx/5xx).
"""
import http.client
import sys
import time

port = int(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for spec in sys.argv[2:]:
    method, path, body_bytes, split_ms = spec.split(",")
    body = b"b" * int(body_bytes)
    if int(split_ms) == 0:
        conn.request(method, path, body=body if body else None)
        local_port = conn.sock.getsockname()[1]  # before the response: `Connection: close` drops sock
        resp = conn.getresponse()
        data = resp.read()
    else:
        if conn.sock is None:
            conn.connect()
        local_port = conn.sock.getsockname()[1]
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: oracle_client\r\n"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        conn.sock.sendall(head.encode())
        time.sleep(int(split_ms) / 1000)
        conn.sock.sendall(b"\r\n" + body)
        resp = http.client.HTTPResponse(conn.sock, method=method)
        resp.begin()
        data = resp.read()
        if resp.will_close:
            conn.close()
    print(resp.status, len(data), local_port, flush=True)
conn.close()
