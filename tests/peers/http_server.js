// HTTP/1.1 test server on Node's `http` module, or `https` with a certificate (node links
// OpenSSL statically: its TLS goes through SSL_read/SSL_write inside /usr/bin/node, over memory
// BIOs, not libssl.so.3). Keep-alive.
//
// Usage: node http_server.js PORT [CERT KEY]   (listens on 127.0.0.1:PORT; HTTPS with CERT KEY)
//
// Routes:
//   GET /status/<code>  -> <code> with body "status <code>\n" and a Content-Length (as
//                          peers/http_server.py; query ignored)
//   GET /chunked/<n>    -> 200 with n chunks "chunk <i> of <n>\n", no Content-Length: Node sends
//                          `Transfer-Encoding: chunked`, and writes the whole response, corked,
//                          with one writev of many iovecs (size line, data and CRLF per chunk)
//   anything else       -> 404 "not found\n"
'use strict';
const fs = require('fs');

const [port, cert, key] = process.argv.slice(2);

function handle(req, res) {
  const path = req.url.split('?')[0];
  const chunked = /^\/chunked\/(\d+)$/.exec(path);
  if (chunked) {
    const n = Number(chunked[1]);
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.cork();
    for (let i = 1; i <= n; i += 1) {
      res.write(`chunk ${i} of ${n}\n`);
    }
    res.end();
    res.uncork();
    return;
  }
  const status = /^\/status\/(\d+)$/.exec(path);
  const code = status ? Number(status[1]) : 404;
  const body = status ? `status ${code}\n` : 'not found\n';
  res.writeHead(code, {
    'Content-Type': 'text/plain',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

const server = cert
  ? require('https').createServer(
      { cert: fs.readFileSync(cert), key: fs.readFileSync(key) },
      handle,
    )
  : require('http').createServer(handle);
// The harness's readiness probe connects and closes without a handshake: not an error here.
server.on('tlsClientError', () => {});
server.listen(Number(port), '127.0.0.1');
