"""Micro-benchmark of the group-commit writer: prints messages/s and the mean batch size.

python -m persistence.bench_writer --url sqlite+aiosqlite:///bench.db --messages 20000 \
    --concurrency 200
Without --url it writes to a fresh SQLite file in a temporary directory. It migrates the
database and adds its own accounts and rooms (random names), so any scratch database does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from persistence.conversations import ConversationStore
from persistence.database import Database
from persistence.migrate import migrate
from persistence.users import UserStore
from persistence.writer import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, GroupCommitWriter


async def _bench(args: argparse.Namespace, url: str) -> None:
    await migrate(url)
    db = await Database.connect(url)
    try:
        run = uuid.uuid4().hex[:8]
        users = UserStore(db)
        convs = ConversationStore(db)
        senders = []
        for n in range(args.concurrency):
            name = f"bench_{run}_{n}"
            senders.append(
                await users.create(
                    username=name,
                    username_key=name,
                    email=f"{name}@example.org",
                    email_key=f"{name}@example.org",
                    password_hash="x",
                    birthdate=date(2000, 1, 1),
                    created=0,
                )
            )
        rooms: list[int] = []
        for n in range(args.conversations):
            key = f"bench {run} {n}"
            joined = await convs.join_room(key, key, senders[0].id, 0, create=True)
            assert joined is not None
            rooms.append(joined[0].id)

        writer = GroupCommitWriter(db, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
        await writer.start()
        per_sender = args.messages // args.concurrency
        latencies: list[float] = []

        async def appender(index: int) -> None:
            sender = senders[index]
            conv = rooms[index % len(rooms)]
            for n in range(per_sender):
                started = time.perf_counter()
                await writer.append(
                    sender_id=sender.id,
                    sender_username=sender.username,
                    conv_id=conv,
                    cmid=f"{run}-{n}",
                    text=f"benchmark message {n} from {sender.username}",
                    ts=int(time.time() * 1000),
                )
                latencies.append(time.perf_counter() - started)

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(appender(i) for i in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        # All of this process's threads: a figure that a busy machine disturbs less.
        cpu = time.process_time() - cpu_started
        await writer.stop()

        stats = writer.stats
        total = per_sender * args.concurrency
        latencies.sort()
        print(f"backend          {db.dialect}")
        print(f"messages         {total} from {args.concurrency} appenders")
        print(f"conversations    {len(rooms)}")
        print(f"elapsed          {elapsed:.2f} s")
        print(f"messages/s       {total / elapsed:,.0f}")
        print(f"cpu              {cpu:.2f} s ({total / max(cpu, 1e-9):,.0f} messages per cpu-s)")
        print(f"batches          {stats.batches}")
        print(f"mean batch size  {stats.messages / max(1, stats.batches):.1f}")
        print(f"latency p50      {statistics.median(latencies) * 1000:.1f} ms")
        print(f"latency p99      {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms")
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH)
    parser.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS)
    args = parser.parse_args()
    if args.concurrency < 1 or args.messages < args.concurrency or args.conversations < 1:
        parser.error("need concurrency >= 1, messages >= concurrency, conversations >= 1")
    if args.url:
        asyncio.run(_bench(args, args.url))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_bench(args, f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"))


if __name__ == "__main__":
    main()
