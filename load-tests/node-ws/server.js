// Minimal Node.js `ws` broadcast server: the fan-out baseline of
// `cspulse-load fanout`. It accepts WebSocket connections on 127.0.0.1,
// answers `{"op":"subscribe"}` with `subscribed`, and, when told on stdin
//   broadcast <t0_us> <period_us> <count> <bytes>
// sends `count` messages of ~`bytes` bytes to every subscribed client, the
// j-th (1-based) at the intended wall-clock time t0 + (j-1)·period, carrying
// that intended time (`t`, µs since the epoch) and `seq` = j. The message is
// encoded once per broadcast and the same buffer is sent to every client.
// It prints `listening <port>` when ready and `done <sent>` after a broadcast.
'use strict';

const { WebSocketServer } = require('ws');
const readline = require('readline');

const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({ host: '127.0.0.1', port, maxPayload: 4096 });
const subscribed = new Set();

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch {
      return;
    }
    if (msg.op === 'subscribe') {
      subscribed.add(ws);
      ws.send(JSON.stringify({ type: 'subscribed', channel: msg.channel, seq: 0 }));
    }
  });
  ws.on('close', () => subscribed.delete(ws));
  ws.on('error', () => subscribed.delete(ws));
});

wss.on('listening', () => {
  process.stdout.write(`listening ${wss.address().port}\n`);
});

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

function message(seq, t, bytes) {
  const head = { type: 'update', channel: 'csm:csm-fanout', seq, topic: 'tickets', t, patch: { pad: '' } };
  const base = JSON.stringify(head).length;
  head.patch.pad = 'x'.repeat(Math.max(0, bytes - base));
  return Buffer.from(JSON.stringify(head));
}

function broadcast(t0, period, count, bytes) {
  let j = 1;
  let sent = 0;
  const step = () => {
    while (j <= count) {
      const intended = t0 + (j - 1) * period;
      const wait = (intended - nowUs()) / 1000;
      if (wait > 0.5) {
        setTimeout(step, Math.max(0, wait - 0.5));
        return;
      }
      if (wait > 0) {
        setImmediate(step);
        return;
      }
      const data = message(j, intended, bytes);
      for (const ws of subscribed) {
        ws.send(data, { binary: false });
        sent += 1;
      }
      j += 1;
    }
    process.stdout.write(`done ${sent}\n`);
  };
  step();
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, ...args] = line.trim().split(/\s+/);
  if (cmd === 'broadcast') {
    const [t0, period, count, bytes] = args.map(Number);
    broadcast(t0, period, count, bytes);
  } else if (cmd === 'quit') {
    process.exit(0);
  }
});
process.stdin.on('end', () => process.exit(0));
