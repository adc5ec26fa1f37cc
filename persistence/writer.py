"""The group-commit writer: appends messages in batches, one transaction per batch.

Appends queue up; one task takes whatever is waiting (up to max_batch), and in one
transaction locks each conversation's counter row in id order, looks up the cmids already
stored, gives each new message the next seq and hash-chain link, inserts them all, writes
the counters back and commits. Callers learn the outcome only after the commit, so nothing
acked or published was ever not durable. While one batch commits the next one gathers:
that is the group commit, without a fixed delay. On PostgreSQL a batch is four round trips
on the bare asyncpg connection (BEGIN; lock and lookup; insert and counters; COMMIT); on
SQLite it is one hop to the thread that holds the writer's sqlite3 connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import Connection

from persistence.chain import link_hash
from persistence.database import Database, is_unavailable
from persistence.errors import AppendFailed, StorageUnavailable
from persistence.messages import message_from_mapping, message_from_row
from persistence.records import Message
from persistence.schema import conversations

__all__ = ["AppendFailed", "AppendResult", "GroupCommitWriter", "WriterStats"]

log = logging.getLogger(__name__)

# Messages one transaction takes at most.
DEFAULT_MAX_BATCH = 256
# Appends waiting at most; past it append() refuses with StorageUnavailable (retry later)
# rather than let a stalled database grow memory without bound.
DEFAULT_MAX_QUEUE = 50_000
# Milliseconds a batch may keep gathering while appends are still streaming in; a lone
# message goes at once (the gathering stops on the first loop turn that brings nothing).
DEFAULT_MAX_WAIT_MS = 2.0


@dataclass(frozen=True, slots=True)
class AppendResult:
    message: Message
    # True when the (sender, cmid) was already stored: message is the first one, as stored.
    duplicate: bool


@dataclass(slots=True)
class WriterStats:
    """Counters for metrics; only the writer task changes them."""

    batches: int = 0
    messages: int = 0
    duplicates: int = 0
    failed: int = 0
    # Batches whose transaction failed on a data problem and were redone one by one.
    retried_batches: int = 0
    last_batch_size: int = 0


class _Pending:
    __slots__ = ("cmid", "conv_id", "future", "sender_id", "sender_username", "text", "ts")

    def __init__(
        self,
        sender_id: int,
        sender_username: str,
        conv_id: int,
        cmid: str,
        text: str,
        ts: int,
        future: asyncio.Future[AppendResult],
    ) -> None:
        self.sender_id = sender_id
        self.sender_username = sender_username
        self.conv_id = conv_id
        self.cmid = cmid
        self.text = text
        self.ts = ts
        self.future = future


Outcome = AppendResult | BaseException

# SQLite: the batch's BEGIN IMMEDIATE holds the database's write lock, which excludes every
# other writer, so a plain read of the counters is already a locked one.
_COUNTERS_SQLITE = select(
    conversations.c.id, conversations.c.last_seq, conversations.c.chain_head
).where(conversations.c.id.in_(bindparam("conv_ids", expanding=True)))
# The pairs come in as one parameter (a JSON array, or two arrays) and drive the join: a
# row-value IN list would scan the index on SQLite, and building an expression per batch
# costs more than the commit.
_LOOKUP_COLUMNS = (
    "m.id, m.conv_id, m.seq, m.sender_id, u.username, m.text, m.ts, m.cmid, "
    "r.id IS NOT NULL AS removed"
)
_LOOKUP_JOINS = (
    "JOIN users AS u ON u.id = m.sender_id LEFT JOIN message_removals AS r ON r.message_id = m.id"
)
_LOOKUP_CMIDS_SQLITE = text(
    f"SELECT {_LOOKUP_COLUMNS} FROM json_each(:pairs) AS p "
    "CROSS JOIN messages AS m ON m.sender_id = json_extract(p.value, '$[0]') "
    f"AND m.cmid = json_extract(p.value, '$[1]') {_LOOKUP_JOINS}"
)
# PostgreSQL (asyncpg, $n parameters): the counter lock and the cmid lookup in one round
# trip. A row with a counter_id is a locked counter, any other a stored message. Every node
# takes counter rows in id order (ORDER BY comes before the locking), so two batches never
# deadlock. The ids come as one array, so the statement (and its prepared form) is the
# same for any number of conversations. The lookup reads the statement's snapshot, taken
# before any wait for a lock: a message with the same cmid that another node committed
# during that wait is not seen, so the insert below breaks the unique (sender_id, cmid)
# constraint and the batch is redone one message at a time, each finding what is stored.
# That is what already happens when the two messages name different conversations, whose
# batches no lock orders.
_LOCK_AND_LOOKUP_PG = (
    "WITH counters AS MATERIALIZED ("
    "SELECT id, last_seq, chain_head FROM conversations "
    "WHERE id = ANY(CAST($1 AS BIGINT[])) ORDER BY id FOR UPDATE) "
    "SELECT id AS counter_id, last_seq, chain_head, NULL AS id, NULL AS conv_id, NULL AS seq, "
    "NULL AS sender_id, NULL AS username, NULL AS text, NULL AS ts, NULL AS cmid, "
    "NULL AS removed FROM counters "
    "UNION ALL "
    f"SELECT NULL, NULL, NULL, {_LOOKUP_COLUMNS} "
    "FROM unnest(CAST($2 AS BIGINT[]), CAST($3 AS VARCHAR[])) AS p(sender_id, cmid) "
    f"JOIN messages AS m ON m.sender_id = p.sender_id AND m.cmid = p.cmid {_LOOKUP_JOINS}"
)
_INSERT_COLUMNS = ("conv_id", "seq", "sender_id", "cmid", "text", "ts", "hash", "prev_hash")
# Straight to sqlite3's executemany: SQLAlchemy's per-row parameter processing would cost
# more than the insert itself, and every value here is a plain int or str.
_INSERT_SQLITE = (
    f"INSERT INTO messages (id, {', '.join(_INSERT_COLUMNS)}) "
    f"VALUES (?, {', '.join('?' for _ in _INSERT_COLUMNS)})"
)
# The array type of each of _INSERT_COLUMNS, in that order.
_PG_ARRAY_TYPES = ("BIGINT", "BIGINT", "BIGINT", "VARCHAR", "TEXT", "BIGINT", "VARCHAR", "VARCHAR")
# PostgreSQL: the insert and the counter update in one round trip, with one array per
# column (no per-row parameters to build or bind). A data-modifying WITH runs to completion
# whatever the outer SELECT reads, and the counter rows it updates are locked by this
# transaction already.
_INSERT_AND_BUMP_PG = (
    f"WITH ins AS (INSERT INTO messages ({', '.join(_INSERT_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(${n} AS {kind}[])" for n, kind in enumerate(_PG_ARRAY_TYPES, 1))
    + ") RETURNING id, conv_id, seq), "
    "bump AS (UPDATE conversations SET last_seq = v.seq, chain_head = v.head "
    "FROM unnest(CAST($9 AS BIGINT[]), CAST($10 AS BIGINT[]), CAST($11 AS VARCHAR[])) "
    "AS v(id, seq, head) WHERE conversations.id = v.id) "
    "SELECT id, conv_id, seq FROM ins"
)
# AUTOINCREMENT's own counter counts too, so an id is never given twice on SQLite.
_LAST_MESSAGE_ID_SQLITE = (
    "SELECT max(coalesce((SELECT max(id) FROM messages), 0), "
    "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0))"
)
_UPDATE_COUNTER_SQLITE = (
    update(conversations)
    .where(conversations.c.id == bindparam("b_id"))
    .values(last_seq=bindparam("b_seq"), chain_head=bindparam("b_head"))
)


class GroupCommitWriter:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._db = db
        self._max_batch = max_batch
        self._max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self._max_queue = max_queue
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.stats = WriterStats()

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="chatd-group-commit-writer")

    async def stop(self) -> None:
        """Refuse new appends, commit everything queued and under way, then return."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task

    async def append(
        self, *, sender_id: int, sender_username: str, conv_id: int, cmid: str, text: str, ts: int
    ) -> AppendResult:
        """Store one message durably (or find its cmid stored already); returns after commit.

        Raises AppendFailed when this message cannot be stored (it took no seq), and
        StorageUnavailable when the database cannot be reached (retry with the same cmid:
        the message may or may not have been committed).
        """
        if self._task is None or self._stopping:
            raise StorageUnavailable("the message writer is not running")
        if len(self._queue) >= self._max_queue:
            raise StorageUnavailable("the message writer is overloaded")
        try:
            text.encode("utf-8")
            cmid.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise AppendFailed(f"not valid Unicode: {exc}") from exc
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(sender_id, sender_username, conv_id, cmid, text, ts, future))
        self._wakeup.set()
        return await future

    # The writer task.

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._gather()
                batch = self._take()
                if batch:
                    await self._process(batch)
        except asyncio.CancelledError:
            self._fail_queued("the message writer was cancelled")
            raise

    async def _gather(self) -> None:
        """Let appends issued in the same burst join, without waiting on a quiet queue."""
        if self._max_wait_s <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        size = len(self._queue)
        while size < self._max_batch and loop.time() < deadline:
            await asyncio.sleep(0)
            if len(self._queue) == size:
                return
            size = len(self._queue)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self._max_batch:
            item = self._queue.popleft()
            # A caller that gave up (cancelled) is owed nothing; its client retries the cmid.
            if not item.future.done():
                batch.append(item)
        return batch

    def _fail_queued(self, reason: str) -> None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(StorageUnavailable(reason))

    async def _process(self, batch: list[_Pending]) -> None:
        outcomes: list[Outcome]
        try:
            outcomes = await self._commit(batch)
        except asyncio.CancelledError:
            _resolve(batch, [StorageUnavailable("the message writer was cancelled") for _ in batch])
            raise
        except Exception as exc:
            if is_unavailable(exc):
                outcomes = [_unavailable(exc) for _ in batch]
            else:
                log.warning(
                    "batch of %d failed (%s); retrying one by one", len(batch), _describe(exc)
                )
                self.stats.retried_batches += 1
                outcomes = await self._commit_one_by_one(batch)
        self.stats.batches += 1
        self.stats.last_batch_size = len(batch)
        for outcome in outcomes:
            if isinstance(outcome, AppendResult):
                if outcome.duplicate:
                    self.stats.duplicates += 1
                else:
                    self.stats.messages += 1
            else:
                self.stats.failed += 1
        _resolve(batch, outcomes)

    async def _commit_one_by_one(self, batch: list[_Pending]) -> list[Outcome]:
        """Each message in a transaction of its own, so that a bad one fails alone."""
        outcomes: list[Outcome] = []
        for index, item in enumerate(batch):
            try:
                outcomes.extend(await self._commit([item]))
            except Exception as exc:
                if is_unavailable(exc):
                    outcomes.extend(_unavailable(exc) for _ in batch[index:])
                    break
                outcomes.append(AppendFailed(_describe(exc)))
        return outcomes

    async def _commit(self, batch: list[_Pending]) -> list[Outcome]:
        if self._db.dialect == "postgresql":
            return await self._db.run_pg_write(_write_batch_pg, batch)
        return await self._db.run_write(_write_batch_sqlite, batch)


# A counter row: (last_seq, chain_head) by conversation id.
Counters = dict[int, tuple[int, str]]
# Stored messages by (sender_id, cmid).
Stored = dict[tuple[int, str], Message]
# A message row in _INSERT_COLUMNS order.
Row = tuple[int, int, int, str, str, int, str, str]
# Message ids by (conv_id, seq).
Ids = dict[tuple[int, int], int]


@dataclass(slots=True)
class _Plan:
    """What a batch writes, worked out from its locked counters and its stored cmids."""

    outcomes: list[Outcome | None]
    rows: list[Row]
    # The batch index of each row.
    row_index: list[int]
    # (index, index of the first message in the batch with the same (sender, cmid)).
    later_of: list[tuple[int, int]]
    # The counters as they are to be written back: (conv_id, last_seq, chain_head).
    bumps: list[tuple[int, int, str]]


def _batch_keys(batch: list[_Pending]) -> tuple[list[int], list[tuple[int, str]]]:
    """The batch's conversation ids (sorted: the lock order) and (sender, cmid) pairs."""
    conv_ids = sorted({item.conv_id for item in batch})
    pairs = sorted({(item.sender_id, item.cmid) for item in batch})
    return conv_ids, pairs


def _plan(batch: list[_Pending], counters: Counters, stored: Stored) -> _Plan:
    """Dedupe the cmids (stored ones and repeats within the batch), then give each new
    message the next seq and chain link of its conversation. No I/O."""
    outcomes: list[Outcome | None] = [None] * len(batch)
    # (sender, cmid) -> index of the first new message in this batch with it.
    first_of: dict[tuple[int, str], int] = {}
    later_of: list[tuple[int, int]] = []
    rows: list[Row] = []
    row_index: list[int] = []
    for index, item in enumerate(batch):
        key = (item.sender_id, item.cmid)
        known = stored.get(key)
        if known is not None:
            outcomes[index] = AppendResult(known, duplicate=True)
            continue
        if key in first_of:
            later_of.append((index, first_of[key]))
            continue
        counter = counters.get(item.conv_id)
        if counter is None:
            outcomes[index] = AppendFailed(f"no conversation {item.conv_id}")
            continue
        last_seq, head = counter
        seq = last_seq + 1
        new_head = link_hash(head, item.conv_id, seq, item.sender_id, item.cmid, item.text, item.ts)
        counters[item.conv_id] = (seq, new_head)
        first_of[key] = index
        row_index.append(index)
        rows.append(
            (item.conv_id, seq, item.sender_id, item.cmid, item.text, item.ts, new_head, head)
        )
    touched = sorted({row[0] for row in rows})
    bumps = [(conv_id, *counters[conv_id]) for conv_id in touched]
    return _Plan(outcomes, rows, row_index, later_of, bumps)


def _outcomes(batch: list[_Pending], plan: _Plan, ids: Ids) -> list[Outcome]:
    """Each message's outcome, in batch order, once its row has its id."""
    outcomes = plan.outcomes
    for index, row in zip(plan.row_index, plan.rows, strict=True):
        item = batch[index]
        message = Message(
            id=ids[(row[0], row[1])],
            conv=item.conv_id,
            seq=row[1],
            sender_id=item.sender_id,
            sender_username=item.sender_username,
            text=item.text,
            ts=item.ts,
            cmid=item.cmid,
            removed=False,
        )
        outcomes[index] = AppendResult(message, duplicate=False)
    for index, first in plan.later_of:
        first_outcome = outcomes[first]
        assert isinstance(first_outcome, AppendResult)
        outcomes[index] = AppendResult(first_outcome.message, duplicate=True)
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


async def _write_batch_pg(conn: Any, batch: list[_Pending]) -> list[Outcome]:
    """PostgreSQL, inside one transaction on an asyncpg connection: lock the counters and
    look the cmids up (one round trip), then insert and bump the counters (one more)."""
    conv_ids, pairs = _batch_keys(batch)
    counters: Counters = {}
    stored: Stored = {}
    senders = [sender for sender, _ in pairs]
    cmids = [cmid for _, cmid in pairs]
    for r in await conn.fetch(_LOCK_AND_LOOKUP_PG, conv_ids, senders, cmids):
        if r["counter_id"] is not None:
            counters[r["counter_id"]] = (r["last_seq"], r["chain_head"])
            continue
        message = message_from_mapping(r)
        stored[(message.sender_id, message.cmid)] = message
    plan = _plan(batch, counters, stored)
    ids: Ids = {}
    if plan.rows:
        bumps = plan.bumps
        inserted = await conn.fetch(
            _INSERT_AND_BUMP_PG,
            *(list(column) for column in zip(*plan.rows, strict=True)),
            [conv_id for conv_id, _, _ in bumps],
            [seq for _, seq, _ in bumps],
            [head for _, _, head in bumps],
        )
        ids = {(r["conv_id"], r["seq"]): r["id"] for r in inserted}
    return _outcomes(batch, plan, ids)


def _write_batch_sqlite(conn: Connection, batch: list[_Pending]) -> list[Outcome]:
    """SQLite, inside one write transaction (it holds the write lock from its BEGIN)."""
    conv_ids, pairs = _batch_keys(batch)
    counters: Counters = {
        row.id: (int(row.last_seq), row.chain_head)
        for row in conn.execute(_COUNTERS_SQLITE, {"conv_ids": conv_ids})
    }
    stored: Stored = {}
    for row in conn.execute(_LOOKUP_CMIDS_SQLITE, {"pairs": json.dumps(pairs)}):
        message = message_from_row(row)
        stored[(message.sender_id, message.cmid)] = message
    plan = _plan(batch, counters, stored)
    ids: Ids = {}
    if plan.rows:
        # The write lock excludes every other writer, so the next ids are ours to give; a
        # plain executemany is several times cheaper than INSERT ... RETURNING.
        next_id = int(conn.exec_driver_sql(_LAST_MESSAGE_ID_SQLITE).scalar_one()) + 1
        conn.exec_driver_sql(
            _INSERT_SQLITE, [(next_id + offset, *row) for offset, row in enumerate(plan.rows)]
        )
        conn.execute(
            _UPDATE_COUNTER_SQLITE,
            [{"b_id": conv_id, "b_seq": seq, "b_head": head} for conv_id, seq, head in plan.bumps],
        )
        ids = {(row[0], row[1]): next_id + offset for offset, row in enumerate(plan.rows)}
    return _outcomes(batch, plan, ids)


def _describe(exc: BaseException) -> str:
    """What went wrong, without the statement or its parameters (message texts are private)."""
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line}"[:300]


def _unavailable(exc: BaseException) -> StorageUnavailable:
    """A fresh exception per caller (one instance raised in many tasks tangles tracebacks)."""
    fresh = StorageUnavailable(
        str(exc) if isinstance(exc, StorageUnavailable) else f"database unavailable: {exc}"
    )
    fresh.__cause__ = exc
    return fresh


def _resolve(batch: list[_Pending], outcomes: list[Outcome]) -> None:
    for item, outcome in zip(batch, outcomes, strict=True):
        if item.future.done():
            continue
        if isinstance(outcome, AppendResult):
            item.future.set_result(outcome)
        else:
            item.future.set_exception(outcome)
