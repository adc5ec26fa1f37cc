'use strict';
// Node Socket.IO 4 with @socket.io/redis-adapter; no storage.
//   node sio_server.js PORT REDIS_URL
// Events: `join` (a room name; acked) and `send` ({room, text}), emitted to the room, the
// sender included, on every node through Redis.
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const Redis = require('ioredis');

const port = Number(process.argv[2]);
const pub = new Redis(process.argv[3]);
const sub = pub.duplicate();

Promise.all([pub, sub].map((c) => new Promise((resolve) => c.once('ready', resolve)))).then(() => {
  const io = new Server(port, {
    transports: ['websocket'],
    perMessageDeflate: false,
    serveClient: false,
    adapter: createAdapter(pub, sub),
  });
  io.on('connection', (socket) => {
    socket.on('join', (room, ack) => {
      socket.join(room);
      if (typeof ack === 'function') ack(true);
    });
    socket.on('send', (m) => {
      io.to(m.room).emit('msg', m);
    });
  });
  console.log(`listening on ${port}`);
});
