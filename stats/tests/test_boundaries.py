"""The stats app stands below the orders app: ``orders`` imports ``stats``, never the reverse.

The aggregate store is a read model anyone may feed, so what it needs of an order is a
Protocol of its own and the time helpers both apps use live in ``orderpipe``. An import of
``orders`` under ``stats/`` (even one only a type checker runs) would tie the two together
again; its tests may use ``orders`` to produce orders.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

STATS = Path(__file__).resolve().parents[1]
FORBIDDEN = "orders"


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every module a tree imports, with its line: ``import``, ``from … import`` (anywhere,
    also in functions and ``if TYPE_CHECKING:``) and ``importlib.import_module("…")``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _forbidden(tree: ast.AST) -> list[str]:
    return [
        f"line {line}: {name}"
        for line, name in _imports(tree)
        if name == FORBIDDEN or name.startswith(f"{FORBIDDEN}.")
    ]


def _stats_modules() -> list[Path]:
    tests = STATS / "tests"
    return sorted(p for p in STATS.rglob("*.py") if tests not in p.parents)


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.relative_to(STATS).as_posix()) for p in _stats_modules()]
)
def test_no_stats_module_imports_orders(path: Path) -> None:
    assert _forbidden(ast.parse(path.read_text(), filename=str(path))) == []


def test_the_store_package_is_among_the_modules_checked() -> None:
    checked = {p.relative_to(STATS).as_posix() for p in _stats_modules()}
    assert {"store/__init__.py", "store/keys.py", "api/views.py"} <= checked
    assert "dashboard.py" in checked


@pytest.mark.parametrize(
    "source",
    [
        "import orders",
        "import orders.validation as v",
        "from orders.validation import epoch_ms",
        "from orders import ledger",
        "if TYPE_CHECKING:\n    from orders.validation import Order",
        "def f():\n    from orders.ledger import RecordedOrder",
        "importlib.import_module('orders.consumer')",
    ],
)
def test_every_form_of_import_is_found(source: str) -> None:
    assert len(_forbidden(ast.parse(source))) == 1


@pytest.mark.parametrize(
    "source", ["import orderpipe.timeutils", "from stats.store import orders_of", "import ordersx"]
)
def test_names_that_merely_start_alike_are_not_orders(source: str) -> None:
    assert _forbidden(ast.parse(source)) == []
