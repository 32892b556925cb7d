"""The architecture, checked on the source: layers import downwards only, no module imports
itself back through others, and no service reaches into another service's modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "contracts", "services")
#: The services' own packages: each may use domain, contracts and services.shared only.
SERVICE_PACKAGES = ("services.assessment", "services.care", "services.escalation", "services.scheduling")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(module: str, *, top_level_only: bool) -> Iterator[str]:
    """The project modules ``module`` imports (``from x import y`` counts ``x.y`` when it is
    a module). ``top_level_only``: those run at import time (``if TYPE_CHECKING`` included)."""
    tree = ast.parse(MODULES[module].read_text())
    nodes = ast.walk(tree) if not top_level_only else _top_level(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                yield name


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            yield from _top_level(node.body)
            yield from _top_level(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


def test_no_module_imports_itself_back() -> None:
    graph = {m: set(imports(m, top_level_only=True)) - {m} for m in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # a package's __init__ re-exporting its submodules is not a circle
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") or c[0].startswith(m + ".") for m in c)]
    assert real == [], "import circles:\n" + "\n".join(" → ".join(c) for c in real)


def _owner(module: str) -> str | None:
    return next((p for p in SERVICE_PACKAGES if module == p or module.startswith(p + ".")), None)


def test_no_service_imports_another_services_modules() -> None:
    crossings = []
    for module in MODULES:
        owner = _owner(module)
        if owner is None:
            continue
        for target in imports(module, top_level_only=False):
            if target.startswith("services.") and not target.startswith("services.shared") and _owner(target) != owner:
                crossings.append(f"{module} → {target}")
    assert crossings == []


def test_layers_import_downwards_only() -> None:
    """domain knows nothing of contracts or services; contracts nothing of services;
    services.shared nothing of any service or of the system's registry."""
    wrong = []
    for module in MODULES:
        for target in imports(module, top_level_only=False):
            if (module.startswith("domain") and not target.startswith("domain")) or (
                module.startswith("contracts") and target.startswith("services")
            ) or (module.startswith("services.shared") and target.startswith("services.")
                  and not target.startswith("services.shared")):
                wrong.append(f"{module} → {target}")
    assert wrong == []
