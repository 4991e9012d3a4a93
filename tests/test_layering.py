"""The shape of proxy/: each layer imports only the layers below it (docs/ARCHITECTURE.md).

Read from the code's own imports (every ``import``, TYPE_CHECKING blocks and function-local
imports included), so a new tie that runs the wrong way fails here before review.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROXY = Path(__file__).resolve().parent.parent / "proxy"

# Which parts of proxy/ a part may import (itself always allowed). A part is a top-level
# module or package of proxy/, or one of the finer names in PARTS.
BASE = {"model", "replies", "config", "metrics", "eager"}
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "replies": {"model"},
    "eager": set(),
    "metrics": {"model", "config"},  # counters and histograms any layer may bump
    "config": {"model", "dns", "state", "metrics"},  # the sections' dataclasses
    "config-assembly": {"model", "config", "checks", "policy", "dns", "state", "metrics"},
    "smtp": {"model"},
    "dns": BASE,
    "state": BASE,
    "relay": BASE,
    "auth": BASE | {"dns"},
    "scan": BASE,  # clients of the external scanners: no symbols, no policy
    "content": BASE,  # MIME, links, attachments: pure functions over the message bytes
    "checks": BASE | {"dns", "state", "auth", "smtp", "scan", "content", "sharing"},
    "policy": BASE,
    "session": BASE | {"smtp", "checks", "policy", "relay"},
    # The operator console: reads the history and state stores, the rules' symbol texts, and runs
    # explain's dry run; served by the admin listener (observability), never imported by the session.
    "console": BASE | {"state", "policy", "explain"},
    # Learn and share: exports what the store knows, parses peer feeds, builds reports.
    "sharing": BASE | {"state", "dns", "auth"},
}
# Finer parts: the loader and docs generator assemble [checks.*] from each check's Options
# (the top of the config layer); observability's metrics are a utility every layer uses.
PARTS = {
    "proxy.config.loader": "config-assembly",
    "proxy.config.docs": "config-assembly",
    "proxy.observability.metrics": "metrics",
    "proxy.observability.scanner_metrics": "metrics",
    "proxy.observability.config": "config",
    "proxy.console.config": "config",
    "proxy.sharing.config": "config",
}


def part_of(module: str) -> str:
    if module in PARTS:
        return PARTS[module]
    return module.split(".")[1] if module.count(".") >= 1 else ""


def module_name(path: Path) -> str:
    rel = path.relative_to(PROXY.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, files: dict[str, Path]) -> set[str]:
    """The project modules a file imports (a submodule named in ``from pkg import mod`` counts
    as that submodule, not as its package)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("proxy."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "proxy":
            subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
            out.update(subs or {node.module})
    return out


def project_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PROXY.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = {m for m in imports_of(path, files) if m in files and m not in (name, "proxy")}
    return graph


def test_each_layer_imports_only_what_it_may() -> None:
    """dns/, state/ and relay/ know nothing of spam (checks, policy); model imports nothing."""
    wrong = []
    for name, deps in project_graph().items():
        part = part_of(name)
        if part not in ALLOWED:
            continue
        for dep in deps:
            target = part_of(dep)
            if target != part and target not in ALLOWED[part]:
                wrong.append(f"{name} -> {dep}")
    assert wrong == [], "imports that run the wrong way:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    """No cycle between modules, including imports made only for type checking."""
    graph = project_graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # A package's __init__ importing its own submodules is not a cycle of layers.
    real = [c for c in cycles if len({n for n in c if n.count(".") > 1 or n in graph}) > 1]
    real = [c for c in real if not all(n.startswith(c[0]) or c[0].startswith(n) for n in c)]
    assert real == [], "import cycles: " + "; ".join(" -> ".join(c) for c in real)


def test_no_module_over_450_lines() -> None:
    """A module that grows past 450 lines does more than one job: split it by job."""
    big = {
        str(p.relative_to(PROXY.parent)): n
        for p in PROXY.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert big == {}


def test_checks_never_touch_session_privates() -> None:
    """Checks see the session only through CheckContext and GreetingHook (no ``session._x``)."""
    offenders = []
    for path in (PROXY / "checks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "session"
                and node.attr.startswith("_")
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
