"""Small SQL helpers shared by the stores: dialect inserts and row-to-record mapping."""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from persistence.records import User
from persistence.schema import users

# A row of any width, as SQLAlchemy 2.1 types them.
AnyRow = Row[*tuple[Any, ...]]


# Ids per IN (...) list: SQLite allows 32,766 bound values in one statement.
IN_CHUNK = 5_000


def chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    """The distinct ids, sorted, in lists of at most IN_CHUNK."""
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), IN_CHUNK):
        yield ordered[start : start + IN_CHUNK]


def insert_ignoring(
    dialect: str, table: Table, conflict: Sequence[Column[Any]]
) -> postgresql.Insert | sqlite.Insert:
    """INSERT ... ON CONFLICT (conflict) DO NOTHING, in the dialect's spelling."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))


USER_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.email,
    users.c.birthdate,
    users.c.role,
    users.c.status,
    users.c.banned_until,
    users.c.org,
    users.c.created,
    users.c.password_hash,
)


def user_from_row(row: AnyRow) -> User:
    """A User from a row that selected USER_COLUMNS first, in that order."""
    return User(*row[: len(USER_COLUMNS)])
