"""Fixtures of the moderation tests: one node shared by the tests that only add accounts
and reports of their own, fresh nodes for those that count or use up a budget."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from modkit import GENEROUS, ModKit
from support.server import ServerProcess


def _env(settings: dict[str, object]) -> dict[str, str]:
    return {f"CHATD_{key.upper()}": str(value) for key, value in settings.items()}


@pytest.fixture(scope="session")
def shared_node(
    tmp_path_factory: pytest.TempPathFactory, artifacts_root: Path
) -> Iterator[tuple[ServerProcess, Path]]:
    base = tmp_path_factory.mktemp("moderation-shared")
    db_path = base / "chatd.db"
    env = {
        "CHATD_DATABASE_URL": f"sqlite+aiosqlite:///{db_path}",
        "CHATD_BROKER_URL": "memory://",
        **_env(GENEROUS),
    }
    node = ServerProcess(env, cwd=base / "cwd", log_path=artifacts_root / "moderation.shared.log")
    node.start()
    yield node, db_path
    node.close()


@pytest.fixture
async def kit(shared_node: tuple[ServerProcess, Path]) -> AsyncIterator[ModKit]:
    """Accounts and clients on the shared node; each test makes names of its own."""
    node, db_path = shared_node
    k = ModKit(node, db_path)
    yield k
    await k.close()


MakeKit = Callable[..., Awaitable[ModKit]]


@pytest.fixture
async def fresh_kit(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> AsyncIterator[MakeKit]:
    """`await fresh_kit(**settings)`: a kit on a node of its own (an empty database)."""
    made: list[ModKit] = []
    numbers = iter(range(1, 100))

    async def make(**settings: object) -> ModKit:
        db_path = tmp_path / f"fresh{next(numbers)}.db"
        node = start_server(f"sqlite+aiosqlite:///{db_path}", **{**GENEROUS, **settings})
        k = ModKit(node, db_path)
        made.append(k)
        return k

    yield make
    for k in made:
        await k.close()
