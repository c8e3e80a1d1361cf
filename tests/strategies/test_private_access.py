"""No module reads another object's private attributes (issue 13's done-when).

An AST scan of the application packages: an attribute access ``<expr>._name`` (a single
leading underscore, not a dunder) is allowed only on ``self``, ``cls``, or, inside a
class, a local name bound to a new instance of that same class (``memory = cls()``: a
constructor-like classmethod filling its own object). Reaching into another object's
privates (``inner._spec``) is what public hooks on the base strategy replace.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("strategies", "server_app", "client_app")


def private_accesses(source: str) -> list[tuple[int, str]]:
    """(line, expression) of every ``x._name`` where ``x`` is not ``self``/``cls``/an own new instance."""
    tree = ast.parse(source)
    own: set[int] = set()  # ids of Name nodes bound to ``cls()`` / ``ClassName()`` in that class
    for cls_node in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for func in (n for n in ast.walk(cls_node) if isinstance(n, ast.FunctionDef)):
            bound = {
                target.id
                for stmt in ast.walk(func)
                if isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Name)
                and stmt.value.func.id in {"cls", cls_node.name}
                for target in stmt.targets
                if isinstance(target, ast.Name)
            }
            own.update(id(n) for n in ast.walk(func) if isinstance(n, ast.Name) and n.id in bound)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and (node.value.id in {"self", "cls"} or id(node.value) in own):
            continue
        found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_scan_finds_a_private_access_and_allows_self() -> None:
    # Prepare
    source = (
        "class A:\n"
        "    def f(self, inner):\n"
        "        self._x = inner._spec\n"
        "        return cls._y, inner.__dict__\n"
        "    @classmethod\n"
        "    def g(cls, other):\n"
        "        made = cls()\n"
        "        made._z = other._z\n"
    )

    # Execute
    found = private_accesses(source)

    # Assert: another object's privates are found; self, cls and an own new instance are not.
    assert found == [(3, "inner._spec"), (8, "other._z")]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_reads_another_objects_private_attributes(package: str) -> None:
    # Prepare
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found under {package}/"

    # Execute
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {expr}"
        for path in files
        for line, expr in private_accesses(path.read_text(encoding="utf-8"))
    ]

    # Assert
    assert offences == [], "private attributes read from outside their object:\n" + "\n".join(offences)
