"""protocol/ imports only the standard library (minus I/O modules), msgpack and itself."""

import ast
import sys
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"
ALLOWED_THIRD_PARTY = {"msgpack"}
# Standard-library modules that do I/O or need an event loop: sans-I/O means none of them.
FORBIDDEN_STDLIB = {"asyncio", "socket", "selectors", "ssl", "subprocess", "threading"}


def imports_of(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(line, top-level module, relative level) of every import anywhere in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0], 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, (node.module or "").split(".")[0], node.level))
    return found


def offence(name: str, level: int) -> str | None:
    if level > 0 or name == "protocol":
        return None
    if name in FORBIDDEN_STDLIB:
        return "does I/O"
    if name in sys.stdlib_module_names or name in ALLOWED_THIRD_PARTY:
        return None
    return "is neither the standard library nor msgpack"


def test_imports_of_sees_every_form_of_import() -> None:
    tree = ast.parse(
        "import os.path\nfrom redis import Redis\nfrom . import frames\n"
        "def f():\n    import starlette\n"
    )
    assert sorted(imports_of(tree)) == [
        (1, "os", 0),
        (2, "redis", 0),
        (3, "", 1),
        (5, "starlette", 0),
    ]


@pytest.mark.parametrize(
    ("name", "level", "bad"),
    [
        ("json", 0, False),
        ("msgpack", 0, False),
        ("protocol", 0, False),
        ("", 1, False),
        ("asyncio", 0, True),
        ("starlette", 0, True),
        ("sqlalchemy", 0, True),
        ("redis", 0, True),
        ("websockets", 0, True),
        ("chatd", 0, True),
        ("persistence", 0, True),
        ("moderation", 0, True),
    ],
)
def test_offence_rule(name: str, level: int, bad: bool) -> None:
    assert (offence(name, level) is not None) is bad


def test_protocol_imports_only_stdlib_and_msgpack() -> None:
    modules = sorted(PROTOCOL_DIR.rglob("*.py"))
    assert len(modules) >= 7, f"expected the protocol modules under {PROTOCOL_DIR}"
    offences = [
        f"{path.name}:{line}: {name} {why}"
        for path in modules
        for line, name, level in imports_of(ast.parse(path.read_text(), str(path)))
        if (why := offence(name, level)) is not None
    ]
    assert not offences, "protocol/ must stay pure:\n" + "\n".join(offences)
