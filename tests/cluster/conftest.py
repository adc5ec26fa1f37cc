"""Fixtures of the multi-node tests: pairs of chatd nodes on one private PostgreSQL
database, with a Redis broker (plain, or a Redis Cluster with sharded pub/sub).

Every test here runs real processes; each module marks its tests slow. `pairs(kind)`
gives nodes that a module's tests share (they only add accounts and conversations of
their own); tests that kill or restart a node start nodes of their own with `fresh_pair`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clusterkit import PAIR_SETTINGS, Pair, make_nodes, start_together, stop_all
from support.naming import database_name
from support.postgres import PostgresServer
from support.redis import PrivateRedis


@pytest.fixture(params=["redis", "cluster"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Runs the test on Redis pub/sub and on a Redis Cluster with sharded pub/sub."""
    return str(request.param)


def _broker_url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("private_redis").url)


@pytest.fixture(scope="module")
def module_redis(request: pytest.FixtureRequest, artifacts_root: Path) -> Iterator[PrivateRedis]:
    """A redis-server for one module's tests alone, which they stop and restart."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    server = PrivateRedis(log_path=artifacts_root / f"cluster.{module}-own" / "redis.log")
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pairs(
    request: pytest.FixtureRequest,
    private_postgres: PostgresServer,
    artifacts_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Pair]]:
    """`pairs(kind)`: two nodes on a database of their own, with PAIR_SETTINGS, started the
    first time a test of the module asks, shared by its tests, stopped at the module's end.
    kind: "redis" (the session's Redis), "cluster" (the session's Redis Cluster) or "own"
    (a Redis of the module's own, as `pair.redis`, which its tests may restart)."""
    made: dict[str, Pair] = {}
    databases: list[str] = []
    module = request.module.__name__.rsplit(".", 1)[-1]

    def get(kind: str) -> Pair:
        pair = made.get(kind)
        if pair is not None and all(n.running for n in pair.nodes):
            return pair
        if pair is not None:
            pair.close()  # a test stopped one of them: start afresh
        tag = f"{module}-{kind}-{len(made)}"
        name = database_name(tag)
        private_postgres.create_database(name)
        databases.append(name)
        db_url = private_postgres.url(name)
        redis = request.getfixturevalue("module_redis") if kind == "own" else None
        broker_url = redis.url if redis is not None else _broker_url(kind, request)
        nodes = make_nodes(
            2,
            db_url,
            broker_url,
            root=tmp_path_factory.mktemp(tag),
            logs=artifacts_root / f"cluster.{tag}",
            **PAIR_SETTINGS,
        )
        pair = made[kind] = Pair(db_url, broker_url, nodes, redis)
        start_together(nodes)
        return pair

    yield get
    stop_all([node for pair in made.values() for node in pair.nodes])
    for name in databases:
        private_postgres.drop_database(name)


@pytest.fixture
def fresh_pair(pg_url: str, artifacts_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Pair]]:
    """`fresh_pair(broker_url, count=2, **settings)`: nodes for this test alone, on its own
    database; stopped at teardown."""
    made: list[Pair] = []

    def factory(broker_url: str, count: int = 2, **settings: object) -> Pair:
        logs = artifacts_dir if not made else artifacts_dir / f"set{len(made)}"
        nodes = make_nodes(
            count, pg_url, broker_url, root=tmp_path / f"set{len(made)}", logs=logs, **settings
        )
        pair = Pair(pg_url, broker_url, nodes)
        made.append(pair)
        start_together(nodes)
        return pair

    yield factory
    stop_all([node for pair in made for node in pair.nodes])
