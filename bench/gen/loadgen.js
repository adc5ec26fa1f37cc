'use strict';
// The benchmark's load generator: one Node process on `ws`, the same for every system.
//
//   node loadgen.js CONFIG.json
//
// It connects the clients the config lists (chatd's JSON or msgpack subprotocol, the raw
// websockets peer's JSON, or Socket.IO's Engine.IO v4 framing spoken directly over ws),
// joins their rooms or DMs, prints {"ev":"ready"} on stdout, then takes commands on stdin,
// one JSON object a line:
//   {"cmd":"step","rate":R,"warmup":S,"measure":S,"drain":S,"noAbort":B}  open-loop sends at
//       R msg/s in total, spread over the senders; prints window_start, window_end, then the
//       result (a step that is clearly failing ends early unless noAbort)
//   {"cmd":"connect","upto":N}  connects clients up to index N (idle runs)
//   {"cmd":"quit"}
// Each message's text carries its sender, its number and its send time (performance.now(),
// one clock), so latency is measured here, from send to each delivery.

const fs = require('fs');
const readline = require('readline');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');
const { encode, decode } = require('@msgpack/msgpack');

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const KIND = cfg.kind; // "chatd" | "ws" | "sio"
const CODEC = cfg.codec || 'json';
const PAYLOAD_BYTES = cfg.payloadBytes || 100;
// Handshakes in flight at once while connecting.
const CONNECT_CONCURRENCY = cfg.connectConcurrency || 100;
// Milliseconds a setup request (auth, join) may take.
const SETUP_TIMEOUT_MS = cfg.setupTimeoutMs || 60000;
// Latency histogram: buckets of BUCKET_MS up to HIST_MAX_MS; later ones land in the last.
const BUCKET_MS = 0.05;
const HIST_MAX_MS = 5000;
const NBUCKETS = Math.ceil(HIST_MAX_MS / BUCKET_MS) + 1;
// The p99 bound of the goal, in ms: an early abort compares against it.
const P99_GOAL_MS = cfg.p99GoalMs || 50;
// Milliseconds between two ticks of the send loop.
const TICK_MS = 1;
const MARK = '~Bm';
const MARK_BUF = Buffer.from(MARK, 'latin1');
const TILDE = 126;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// -- clients ---------------------------------------------------------------------------

const clients = cfg.clients.map((c, index) => ({ ...c, index, ws: null, keys: [], open: false }));
const senders = cfg.senders || [];
let closedAfterSetup = 0;
const closeCodes = {};
const errorCodes = {};
let setupDone = false;

// Per step: received counts per sender and message number.
let counts = senders.map(() => new Uint16Array(1));
let hist = new Uint32Array(NBUCKETS);
let maxLat = 0;
let measuredDeliveries = 0;
let lateDeliveries = 0;
let totalReceived = 0;
let winStart = null; // per sender: first message number in the window
let winEnd = null;
let inWindow = false;
let lastFrameAt = 0;

// Reads a decimal integer from buf at i; returns [value, index after it].
function readInt(buf, i) {
  let v = 0;
  let c = buf[i];
  while (c >= 48 && c <= 57) {
    v = v * 10 + (c - 48);
    c = buf[++i];
  }
  return [v, i];
}

function onDelivery(buf, at) {
  let i = buf.indexOf(MARK_BUF);
  if (i < 0) return false;
  i += MARK_BUF.length;
  // The marker is ~Bm<sender>_<n>_<ms>.<µs>~, digits only, parsed without strings.
  const [s, i1] = readInt(buf, i);
  if (buf[i1] !== 95) return false;
  const [n, i2] = readInt(buf, i1 + 1);
  if (buf[i2] !== 95) return false;
  const [whole, i3] = readInt(buf, i2 + 1);
  if (buf[i3] !== 46) return false;
  const [frac, i4] = readInt(buf, i3 + 1);
  if (buf[i4] !== TILDE || i4 - i3 !== 4) return false;
  const sent = whole + frac / 1000;
  if (s >= senders.length || !(sent > 0)) return false;
  const c = counts[s];
  if (n < c.length) c[n] += 1;
  totalReceived += 1;
  if (winStart !== null && n >= winStart[s] && (winEnd === null || n < winEnd[s])) {
    const lat = at - sent;
    let b = Math.floor(lat / BUCKET_MS);
    if (b >= NBUCKETS) b = NBUCKETS - 1;
    if (b < 0) b = 0;
    hist[b] += 1;
    if (lat > maxLat) maxLat = lat;
    measuredDeliveries += 1;
    if (lat > P99_GOAL_MS) lateDeliveries += 1;
  }
  return true;
}

function noteError(code) {
  errorCodes[code] = (errorCodes[code] || 0) + 1;
}

function withTimeout(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out`)), SETUP_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Each protocol: how to set a client up, and how its send frames look.
const protocols = {
  chatd: {
    subprotocol: () => `chatd.v1.${CODEC}`,
    encode: (frame) => (CODEC === 'json' ? JSON.stringify(frame) : Buffer.from(encode(frame))),
    decode: (data) => (CODEC === 'json' ? JSON.parse(data.toString('utf8')) : decode(data)),
    setup(client) {
      // auth, then one room.join / dm.open per target; each reply names the conv id.
      const ws = client.ws;
      const P = protocols.chatd;
      return new Promise((resolve, reject) => {
        let rid = 1;
        const pending = new Map();
        client.onSetupFrame = (data) => {
          let frame;
          try {
            frame = P.decode(data);
          } catch (e) {
            return;
          }
          const waiter = pending.get(frame.rid);
          if (waiter) {
            pending.delete(frame.rid);
            if (frame.t === 'error') reject(new Error(`${frame.code}: ${frame.message}`));
            else waiter(frame);
          }
        };
        const request = (frame) =>
          new Promise((res) => {
            frame.rid = rid++;
            pending.set(frame.rid, res);
            ws.send(P.encode(frame));
          });
        (async () => {
          await request({ t: 'auth', token: client.token });
          for (const target of client.targets || []) {
            const reply = target.room
              ? await request({ t: 'room.join', room: target.room })
              : await request({ t: 'dm.open', user: target.dm });
            client.keys.push(String(reply.conv));
          }
          resolve();
        })().catch(reject);
      });
    },
    sendFrame(sender, text, cmid) {
      if (CODEC === 'json') {
        return `{"t":"send","conv":${sender.conv},"cmid":"${cmid}","text":"${text}"}`;
      }
      return Buffer.from(encode({ t: 'send', conv: sender.conv, cmid, text }));
    },
    isError(data) {
      // Only frames without a marker come here: ready, conv, ack, error.
      try {
        const frame = protocols.chatd.decode(data);
        if (frame.t === 'error') noteError(frame.code);
      } catch (e) {
        noteError('undecodable');
      }
    },
  },
  ws: {
    subprotocol: () => undefined,
    setup(client) {
      const ws = client.ws;
      return new Promise((resolve) => {
        const want = new Set((client.targets || []).map((t) => t.room));
        client.onSetupFrame = (data) => {
          const frame = JSON.parse(data.toString('utf8'));
          if (frame.t === 'joined') {
            want.delete(frame.room);
            client.keys.push(frame.room);
            if (want.size === 0) resolve();
          }
        };
        if (want.size === 0) resolve();
        for (const room of want) ws.send(JSON.stringify({ t: 'join', room }));
      });
    },
    sendFrame: (sender, text) => `{"t":"send","room":"${sender.key}","text":"${text}"}`,
    isError() {},
  },
  sio: {
    // Engine.IO v4 over a WebSocket: "0{open}", then Socket.IO "40" connects the main
    // namespace; "42[...]" is an event, "42<id>[...]" one that wants an ack "43<id>[...]".
    subprotocol: () => undefined,
    setup(client) {
      const ws = client.ws;
      return new Promise((resolve) => {
        const rooms = (client.targets || []).map((t) => t.room);
        let joined = 0;
        client.onSetupFrame = (data) => {
          const s = data.toString('utf8');
          if (s[0] === '0') ws.send('40');
          else if (s.startsWith('40')) {
            if (rooms.length === 0) resolve();
            rooms.forEach((room, id) => ws.send(`42${id}["join",${JSON.stringify(room)}]`));
          } else if (s.startsWith('43')) {
            const id = parseInt(s.slice(2), 10);
            client.keys.push(rooms[id]);
            joined += 1;
            if (joined === rooms.length) resolve();
          }
        };
      });
    },
    sendFrame: (sender, text) => `42["send",{"room":"${sender.key}","text":"${text}"}]`,
    isError() {},
  },
};
const proto = protocols[KIND];

function urlOf(client) {
  if (KIND === 'sio') return `${client.url}/socket.io/?EIO=4&transport=websocket`;
  return client.url;
}

function connect(client) {
  return new Promise((resolve, reject) => {
    // No UTF-8 check of received text frames: the servers are trusted here, and the check
    // is per byte in JS, the largest cost per delivery after the read itself.
    const opts = { perMessageDeflate: false, maxPayload: 16 * 1024 * 1024, skipUTF8Validation: true };
    if (client.localAddress) opts.localAddress = client.localAddress;
    const sub = proto.subprotocol();
    const ws = sub ? new WebSocket(urlOf(client), sub, opts) : new WebSocket(urlOf(client), opts);
    client.ws = ws;
    client.onSetupFrame = null;
    ws.on('message', (data, isBinary) => {
      const at = performance.now();
      lastFrameAt = at;
      if (KIND === 'sio' && data.length === 1 && data[0] === 50) {
        ws.send('3'); // Engine.IO ping -> pong
        return;
      }
      if (onDelivery(data, at)) return;
      if (client.onSetupFrame) client.onSetupFrame(data, isBinary);
      else proto.isError(data);
    });
    ws.on('error', (err) => {
      if (!client.open) reject(err);
    });
    ws.on('close', (code) => {
      if (client.open && setupDone) {
        closedAfterSetup += 1;
        closeCodes[code] = (closeCodes[code] || 0) + 1;
      }
      client.open = false;
    });
    ws.on('open', () => {
      client.open = true;
      withTimeout(proto.setup(client), `setup of client ${client.index}`)
        .then(() => {
          client.onSetupFrame = null;
          resolve();
        })
        .catch(reject);
    });
  });
}

async function connectRange(from, to) {
  let next = from;
  const workers = [];
  for (let w = 0; w < CONNECT_CONCURRENCY; w++) {
    workers.push(
      (async () => {
        while (next < to) {
          const client = clients[next++];
          await connect(client);
        }
      })(),
    );
  }
  await Promise.all(workers);
}

// -- senders -----------------------------------------------------------------------------

const members = new Map(); // target key -> clients that joined it

function resolveSenders() {
  for (const client of clients) {
    for (const key of client.keys) members.set(key, (members.get(key) || 0) + 1);
  }
  for (const s of senders) {
    const client = clients[s.client];
    s.key = client.keys[s.target || 0];
    s.conv = Number(s.key);
    s.members = members.get(s.key) || 0;
  }
}

function makeText(s, n) {
  const head = `${MARK}${s}_${n}_${performance.now().toFixed(3)}~`;
  return head.length >= PAYLOAD_BYTES ? head : head + 'x'.repeat(PAYLOAD_BYTES - head.length);
}

function percentile(p, total) {
  if (total === 0) return null;
  const rank = Math.ceil(p * total);
  let acc = 0;
  for (let b = 0; b < NBUCKETS; b++) {
    acc += hist[b];
    if (acc >= rank) return (b + 1) * BUCKET_MS; // the bucket's upper bound
  }
  return maxLat;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function step({ rate, warmup, measure, drain, runId, noAbort }) {
  const nS = senders.length;
  const perSender = rate / nS; // msg/s of each sender
  const total = warmup + measure;
  const cap = Math.ceil(perSender * total * 1.5) + 16;
  counts = senders.map(() => new Uint16Array(cap));
  hist = new Uint32Array(NBUCKETS);
  maxLat = 0;
  measuredDeliveries = 0;
  lateDeliveries = 0;
  totalReceived = 0;
  winStart = null;
  winEnd = null;
  const sent = new Array(nS).fill(0);
  let totalExpected = 0;
  const errorsBefore = JSON.stringify(errorCodes);
  const closedBefore = closedAfterSetup;
  const t0 = performance.now();
  const tWin = t0 + warmup * 1000;
  const tEnd = tWin + measure * 1000;
  let cpuWin = null;
  let aborted = null;
  let sentTotal = 0;

  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      if (!inWindow && winStart === null && now >= tWin) {
        winStart = sent.slice();
        inWindow = true;
        cpuWin = process.cpuUsage();
        out({ ev: 'window_start' });
      }
      if (now >= tEnd || aborted) {
        winEnd = sent.slice();
        inWindow = false;
        out({ ev: 'window_end' });
        resolve();
        return;
      }
      // Round robin: the g-th message of the step is sender g % nS's, due at g / rate, so
      // a tick costs what it sends, however many senders there are.
      const due = Math.min(Math.floor(((now - t0) * rate) / 1000), cap * nS) - sentTotal;
      for (let k = 0; k < due; k++) {
        const s = sentTotal % nS;
        const sender = senders[s];
        const n = sent[s]++;
        sentTotal += 1;
        const text = makeText(s, n);
        clients[sender.client].ws.send(proto.sendFrame(sender, text, `${runId}.${s}.${n}`));
        totalExpected += sender.members;
      }
      if (inWindow && !noAbort && now - tWin > 2000) {
        const backlog = totalExpected - totalReceived;
        if (measuredDeliveries > 0 && lateDeliveries / measuredDeliveries > 0.05) {
          aborted = 'p99 over goal';
        } else if (backlog > rate * 2 * Math.max(1, senders[0].members)) {
          aborted = 'backlog over 2 s';
        }
      }
      setTimeout(tick, TICK_MS);
    };
    tick();
  });
  const cpu = process.cpuUsage(cpuWin);
  const windowS = (performance.now() - tWin) / 1000;
  // Drain: until every message sent is delivered, or the deadline.
  const drainEnd = performance.now() + drain * 1000;
  while (performance.now() < drainEnd && totalReceived < totalExpected) await sleep(20);
  let expected = 0;
  let delivered = 0;
  let dup = 0;
  let windowSent = 0;
  for (let s = 0; s < nS; s++) {
    const m = senders[s].members;
    const c = counts[s];
    for (let n = winStart[s]; n < winEnd[s]; n++) {
      windowSent += 1;
      expected += m;
      delivered += Math.min(c[n], m);
      if (c[n] > m) dup += c[n] - m;
    }
  }
  // Settle: let a backlog left by an overloaded step go quiet before the next one.
  const settleEnd = performance.now() + 30000;
  while (performance.now() < settleEnd && performance.now() - lastFrameAt < 500) await sleep(50);
  const errors = {};
  const before = JSON.parse(errorsBefore);
  for (const [k, v] of Object.entries(errorCodes)) if (v - (before[k] || 0) > 0) errors[k] = v - (before[k] || 0);
  return {
    ev: 'result',
    rate,
    window_s: windowS,
    sent: windowSent,
    expected,
    delivered,
    loss: expected - delivered,
    dup,
    delivered_per_s: delivered / windowS,
    p50_ms: percentile(0.5, measuredDeliveries),
    p99_ms: percentile(0.99, measuredDeliveries),
    max_ms: measuredDeliveries ? maxLat : null,
    aborted,
    errors,
    closed: closedAfterSetup - closedBefore,
    close_codes: { ...closeCodes },
    gen_cpu_pct: ((cpu.user + cpu.system) / 1e4) / windowS,
  };
}

// -- main --------------------------------------------------------------------------------

async function main() {
  const initial = cfg.connectInitially === undefined ? clients.length : cfg.connectInitially;
  const started = performance.now();
  await connectRange(0, initial);
  resolveSenders();
  setupDone = true;
  out({ ev: 'ready', connected: initial, setup_s: (performance.now() - started) / 1000,
        members: Object.fromEntries([...new Set(senders.map((s) => s.key))].map((k) => [k, members.get(k)])) });
  let connected = initial;
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    if (cmd.cmd === 'quit') break;
    if (cmd.cmd === 'step') out(await step(cmd));
    if (cmd.cmd === 'connect') {
      const t = performance.now();
      await connectRange(connected, Math.min(cmd.upto, clients.length));
      connected = Math.min(cmd.upto, clients.length);
      out({ ev: 'connected', count: connected, open: clients.filter((c) => c.open).length,
            seconds: (performance.now() - t) / 1000 });
    }
  }
  for (const c of clients) if (c.ws) c.ws.terminate();
  process.exit(0);
}

main().catch((err) => {
  out({ ev: 'fatal', error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
