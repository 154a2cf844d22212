"""Every generated, checked-in document and the content the code gives it.

``auren docs generate`` writes them and ``--check`` compares them; a test fails when a checked-in
file differs from what the code generates, so none of them can drift from the code.
"""

from __future__ import annotations

from pathlib import Path

from auren.settings import Settings

DASHBOARD_DIR = Path("deploy") / "grafana" / "dashboards"


def generated(root: Path, settings: Settings | None = None) -> dict[Path, str]:
    """Every generated file under ``root`` (the repository) and the content it must have:
    the Grafana dashboards, and each service's document and OpenAPI document (the team's
    owner and contact from ``settings``)."""
    # Loaded by this command only: every other `auren` command starts without the SDK.
    from auren.docsgen import dashboards, services

    files = {root / DASHBOARD_DIR / f"{name}.json": dashboards.render(name)
             for name in dashboards.DASHBOARDS}
    files.update({root / path: content
                  for path, content in services.render(settings or Settings()).items()})
    return files


def stale_files(root: Path, *, write: bool, settings: Settings | None = None) -> list[Path]:
    """The generated files whose checked-in content differs (or is missing); rewritten when
    ``write``."""
    stale = []
    for path, content in generated(root, settings).items():
        current = path.read_text() if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return stale
