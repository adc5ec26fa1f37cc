"""Names made from test ids: artifact directories and database names."""

import itertools
import os
import re

_database_numbers = itertools.count(1)

PG_NAME_LIMIT = 63
"""PostgreSQL's identifier limit, in bytes."""


def artifact_name(nodeid: str) -> str:
    """A file name for a test: tests/a/test_b.py::test_c[x] -> a.test_b.test_c-x."""
    path, _, rest = nodeid.partition("::")
    module = path.removeprefix("tests/").removesuffix(".py").replace("/", ".")
    name = f"{module}.{rest.replace('::', '.')}" if rest else module
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def database_name(test_name: str) -> str:
    """A database name unique in this run and readable: t<n>_<pid>_<test name>."""
    stem = re.sub(r"[^a-z0-9_]+", "_", test_name.lower())
    return f"t{next(_database_numbers)}_{os.getpid()}_{stem}"[:PG_NAME_LIMIT]
