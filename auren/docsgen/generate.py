"""Every generated, checked-in document and the content the code gives it.

``auren docs generate`` writes them and ``--check`` compares them; a test fails when a checked-in
file differs from what the code generates, so none of them can drift from the code.
"""

from __future__ import annotations

from pathlib import Path

DASHBOARD_DIR = Path("deploy") / "grafana" / "dashboards"


def generated(root: Path) -> dict[Path, str]:
    """Every generated file under ``root`` (the repository) and the content it must have."""
    # Loaded by this command only: every other `auren` command starts without the SDK.
    from auren.docsgen import dashboards

    return {root / DASHBOARD_DIR / f"{name}.json": dashboards.render(name)
            for name in dashboards.DASHBOARDS}


def stale_files(root: Path, *, write: bool) -> list[Path]:
    """The generated files whose checked-in content differs (or is missing); rewritten when
    ``write``."""
    stale = []
    for path, content in generated(root).items():
        current = path.read_text() if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return stale
