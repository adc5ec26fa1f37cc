"""protocol/ stays pure: no event loop, web framework, database or broker library.

The direction between our packages (DESIGN.md) is checked by import-linter, which
scripts/test.sh runs (`lint-imports`, contracts in pyproject.toml). This test covers what
import-linter does not see here: third-party and standard-library imports.
"""

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_DIR = REPO_ROOT / "protocol"

# Libraries that do I/O or need an event loop; protocol/ is sans-I/O (STYLE.md, 1).
IO_LIBRARIES = {
    "asyncio",
    "starlette",
    "sqlalchemy",
    "redis",
    "websockets",
    "uvicorn",
    "uvloop",
    "anyio",
    "asyncpg",
    "aiosqlite",
    "alembic",
    "httpx",
}
OUR_OTHER_PACKAGES = {"chatd", "persistence", "moderation"}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import anywhere in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_imported_modules_sees_every_form_of_import() -> None:
    tree = ast.parse(
        "import asyncio.tasks\nfrom redis import Redis\nfrom . import frames\n"
        "def f():\n    import starlette\n"
    )
    assert sorted(imported_modules(tree)) == [(1, "asyncio"), (2, "redis"), (5, "starlette")]


def test_protocol_imports_no_io_library() -> None:
    modules = sorted(PROTOCOL_DIR.rglob("*.py"))
    assert modules, f"no modules under {PROTOCOL_DIR}: nothing to check"
    offences = [
        f"{path.relative_to(REPO_ROOT)}:{line}: imports {name}"
        for path in modules
        for line, name in imported_modules(ast.parse(path.read_text(), str(path)))
        if name in IO_LIBRARIES | OUR_OTHER_PACKAGES
    ]
    assert not offences, "protocol/ must stay pure:\n" + "\n".join(offences)
