// HTTP/1.1 test server on Node's `http` module (plain TCP, keep-alive).
//
// Usage: node http_server.js PORT   (listens on 127.0.0.1:PORT)
//
// Routes:
//   GET /status/<code>  -> <code> with body "status <code>\n" and a Content-Length (as
//                          peers/http_server.py; query ignored)
//   GET /chunked/<n>    -> 200 with n chunks "chunk <i> of <n>\n", no Content-Length: Node sends
//                          `Transfer-Encoding: chunked`, and writes the whole response, corked,
//                          with one writev of many iovecs (size line, data and CRLF per chunk)
//   anything else       -> 404 "not found\n"
'use strict';
const http = require('http');

const [port] = process.argv.slice(2);
const server = http.createServer((req, res) => {
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
});
server.listen(Number(port), '127.0.0.1');
