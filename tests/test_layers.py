"""The package's rooms and their floors: every import points down, never up or sideways.

Each module belongs to a room (``auren/<room>/`` or ``auren/<room>.py``); rooms stand on floors.
A module may import its own room and any room on a lower floor; an import of a room on the same
or a higher floor fails here, whether at the top of the module, inside a function or under
``TYPE_CHECKING``. A new room must be given a floor below (and in ``docs/DESIGN.md``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "auren"

# Lowest first. Rooms on one floor do not know each other.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("auren", "auren.errors", "auren.settings", "auren.observability"),  # ground: no auren import
    ("auren.events",),  # the domain's records and metric registry (pure)
    ("auren.providers",),  # verify and parse per provider (pure)
    ("auren.adapters",),  # I/O behind Protocols, their twins, the breaker
    ("auren.connections",),  # linked accounts, tokens, provider API clients, the fetcher
    # the webhook path; NEUROS's engine and memory; consents and the audit log
    ("auren.ingest", "auren.neuros", "auren.privacy"),
    ("auren.erasure",),  # erasing a person: the record, the steps, the ledger
    ("auren.services",),  # the apps, the sink, the composition root, the kernel
    ("auren.sim", "auren.infra"),  # synthetic wearers; the loopback stack (tooling)
    ("auren.ops",),  # the validation toolkit
    ("auren.docsgen",),  # documents generated from the code (dashboards from the SLA table)
    ("auren.cli",),  # the command line, mounted in one place
    ("auren.__main__",),  # python -m auren
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def room_of_path(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts[:2])


def room_of_module(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every ``auren`` import in the file, wherever it stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "auren" or alias.name.startswith("auren."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base != "auren" and not base.startswith("auren."):
                continue
            for alias in node.names:
                # `from auren import infra` imports the room auren.infra, not auren itself.
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(candidate) else base


def test_every_room_has_a_floor():
    rooms = {room_of_path(p) for p in PACKAGE.rglob("*.py")}
    assert rooms - FLOOR.keys() == set(), "give every room of auren/ a floor in FLOORS"


def test_imports_only_point_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        room = room_of_path(path)
        for line, module in imports(path):
            target = room_of_module(module)
            if target != room and FLOOR[target] >= FLOOR[room]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {room} (floor "
                             f"{FLOOR[room]}) imports {module} (floor {FLOOR[target]})")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(wrong)


def test_the_check_sees_imports_wherever_they_stand(tmp_path):
    """The walker finds lazy, TYPE_CHECKING and ``from auren import room`` imports."""
    module = PACKAGE / "adapters" / "base.py"
    found = {name for _, name in imports(module)}
    assert "auren.events" in found and "auren.errors" in found
    lazy = {name for _, name in imports(PACKAGE / "services" / "dataplane.py")}
    assert {"auren.adapters.postgres", "auren.ingest.durable"} <= lazy
    rooms = {room_of_module(name) for _, name in imports(PACKAGE / "cli" / "infra.py")}
    assert "auren.infra" in rooms


def test_no_test_module_imports_another():
    """Shared test code lives in helper modules (tests/helpers.py, samples, ...), never in a
    test module or a conftest another test imports."""
    tests = Path(__file__).resolve().parent
    wrong = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "tests" and any(p.startswith("test_") or p == "conftest"
                                               for p in parts[1:]):
                    wrong.append(f"{path.relative_to(tests.parent)}:{node.lineno}: {name}")
    assert not wrong, "\n".join(wrong)
