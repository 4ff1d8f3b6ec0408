// HTTP/1.1 test client on Node's `https` module (or `http` with --plain): one keep-alive
// connection (an Agent with keepAlive and maxSockets 1), one GET per PATH in order, certificate not
// verified. Prints one line per request: "<status> <body bytes> <local port>" (body bytes as
// received, after chunked decoding). Sends no User-Agent header.
//
// Usage: node https_client.js [--plain] [--wait-ms MS] PORT PATH...
//   --plain: plain HTTP (Node's `http` module) instead of HTTPS
//   --wait-ms: sleep this long after starting, before the first request (time for an agent to find
//   this new process's OpenSSL, which lives inside the node executable)
'use strict';
const args = process.argv.slice(2);
const plain = args[0] === '--plain';
if (plain) {
  args.splice(0, 1);
}
const client = require(plain ? 'http' : 'https');
let waitMs = 0;
if (args[0] === '--wait-ms') {
  waitMs = Number(args[1]);
  args.splice(0, 2);
}
const port = Number(args[0]);
const paths = args.slice(1);
const agent = new client.Agent({ keepAlive: true, maxSockets: 1 });

function get(path) {
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port, path, agent };
    if (!plain) {
      options.rejectUnauthorized = false;
    }
    const req = client.get(
      options,
      (res) => {
        const localPort = res.socket.localPort;
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () =>
          resolve(`${res.statusCode} ${Buffer.concat(chunks).length} ${localPort}`),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(30000, () => req.destroy(new Error(`timeout on ${path}`)));
    req.on('error', reject);
  });
}

(async () => {
  await new Promise((resolve) => setTimeout(resolve, waitMs));
  for (const path of paths) {
    console.log(await get(path));
  }
  agent.destroy();
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
