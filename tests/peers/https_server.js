// HTTPS/1.1 test server on Node's `https` module (node links OpenSSL statically: its TLS goes
// through SSL_read/SSL_write inside /usr/bin/node, over memory BIOs, not libssl.so.3).
//
// Usage: node https_server.js PORT CERT KEY   (listens on 127.0.0.1:PORT, keep-alive)
//
// Routes (as peers/http_server.py):
//   GET /status/<code>  -> <code> with body "status <code>\n" and a Content-Length (query ignored)
//   anything else       -> 404 "not found\n"
'use strict';
const fs = require('fs');
const https = require('https');

const [port, cert, key] = process.argv.slice(2);
const server = https.createServer(
  { cert: fs.readFileSync(cert), key: fs.readFileSync(key) },
  (req, res) => {
    const match = /^\/status\/(\d+)$/.exec(req.url.split('?')[0]);
    const code = match ? Number(match[1]) : 404;
    const body = match ? `status ${code}\n` : 'not found\n';
    res.writeHead(code, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  },
);
// The harness's readiness probe connects and closes without a handshake: not an error here.
server.on('tlsClientError', () => {});
server.listen(Number(port), '127.0.0.1');
