"""Fixtures of the chat-core tests: nodes shared by tests that want the same settings,
a Kit per test (accounts and clients, closed at teardown), and talking bystanders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from chatkit import SHARED_SETTINGS, Chatter, Kit, NodePool
from support.server import ServerProcess


@pytest.fixture(scope="session")
def node_pool(tmp_path_factory: pytest.TempPathFactory, artifacts_root: Path) -> Iterator[NodePool]:
    pool = NodePool(tmp_path_factory.mktemp("chatd-pool"), artifacts_root)
    yield pool
    pool.close()


@pytest.fixture
def shared_server(node_pool: NodePool) -> ServerProcess:
    """The node most chat-core tests share (SQLite, memory broker, budgets raised)."""
    return node_pool.get(**SHARED_SETTINGS)


@pytest.fixture
async def make_kit() -> AsyncIterator[Callable[[ServerProcess], Kit]]:
    """`make_kit(server) -> Kit`; every client of every kit is closed at teardown."""
    kits: list[Kit] = []

    def factory(server: ServerProcess) -> Kit:
        kit = Kit(server)
        kits.append(kit)
        return kit

    yield factory
    for kit in kits:
        await kit.close()


@pytest.fixture
def kit(shared_server: ServerProcess, make_kit: Callable[[ServerProcess], Kit]) -> Kit:
    """A Kit on the shared node."""
    return make_kit(shared_server)


@pytest.fixture
async def chatter(kit: Kit) -> AsyncIterator[Chatter]:
    """Two bystanders talking on the test's node; the test calls `await chatter.stop()` at
    its end to check that every one of their messages arrived."""
    pair = await Chatter.start(kit)
    yield pair
    await pair.halt()
