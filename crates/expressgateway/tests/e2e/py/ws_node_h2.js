// Node's built-in http2 client opening a WebSocket with RFC 8441 extended
// CONNECT (`:protocol: websocket`): checks the server's
// SETTINGS_ENABLE_CONNECT_PROTOCOL, sends one masked text frame and
// expects it echoed. Usage: node ws_node_h2.js PORT CA_PEM
// Prints one JSON report.
'use strict';
const http2 = require('node:http2');
const fs = require('node:fs');
const crypto = require('node:crypto');

const [port, caPath] = process.argv.slice(2);
const report = {};
const timer = setTimeout(() => {
  report.error = 'timeout';
  console.log(JSON.stringify(report));
  process.exit(1);
}, 15000);

function frame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const head = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([head, mask, body]);
}

const session = http2.connect(`https://localhost:${port}`, {
  ca: fs.readFileSync(caPath),
});
session.on('error', (e) => {
  report.error = String(e);
});
session.on('remoteSettings', (settings) => {
  if (report.enable_connect_protocol !== undefined) return;
  report.enable_connect_protocol = settings.enableConnectProtocol;
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': 'https',
    ':path': '/node',
    ':authority': `localhost:${port}`,
    'sec-websocket-version': '13',
  });
  stream.on('response', (headers) => {
    report.status = headers[':status'];
    stream.write(frame(0x1, Buffer.from('hello from node')));
  });
  let buf = Buffer.alloc(0);
  let done = false;
  stream.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (!done && buf.length >= 2 && buf.length >= 2 + (buf[1] & 0x7f)) {
      done = true;
      report.opcode = buf[0] & 0x0f;
      report.echo = buf.subarray(2, 2 + (buf[1] & 0x7f)).toString();
      stream.write(frame(0x8, Buffer.from([0x03, 0xe8])));
      stream.end();
      clearTimeout(timer);
      console.log(JSON.stringify(report));
      session.close();
    }
  });
  stream.on('error', (e) => {
    report.error = String(e);
  });
});
