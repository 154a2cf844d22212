"""The console's assets: everything the page and its worker name is shipped in the package, and
the vendored uPlot is exactly the build package-lock.json names (with its license)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from auren.services.console.app import STATIC
from tests.services.console_kit import ROOT, needs

VENDOR = STATIC / "vendor"


def _local(path: str) -> Path:
    assert path.startswith("/"), path
    if path == "/":
        return STATIC / "index.html"
    assert path.startswith("/console/static/"), path
    return STATIC / path.removeprefix("/console/static/")


def test_the_page_worker_and_manifest_name_only_shipped_files() -> None:
    page = (STATIC / "index.html").read_text()
    named = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert named and all(_local(p).is_file() for p in named), named
    worker = (STATIC / "sw.js").read_text()
    shell = re.findall(r'^  "(/[^"]*)",$', worker, re.M)
    assert "/" in shell and all(_local(p).is_file() for p in shell), shell
    manifest = json.loads((STATIC / "manifest.webmanifest").read_text())
    assert all(_local(icon["src"]).is_file() for icon in manifest["icons"])
    # Nothing in the page or its script reaches another site.
    for name in ("index.html", "console.js", "console.css", "sw.js"):
        assert not re.search(r"https?://", (STATIC / name).read_text()), name


def test_vendored_uplot_is_the_locked_build_with_its_license() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/uplot"]["version"]
    build = (VENDOR / "uPlot.iife.min.js").read_text()
    assert f"(v{version})" in build.splitlines()[0]
    assert "MIT License" in (VENDOR / "uPlot.LICENSE").read_text()
    needs(ROOT / "node_modules" / "uplot", "./scripts/web-assets installs the locked packages")
    for shipped, source in (("uPlot.iife.min.js", "dist/uPlot.iife.min.js"),
                            ("uPlot.min.css", "dist/uPlot.min.css"),
                            ("uPlot.LICENSE", "LICENSE")):
        assert (VENDOR / shipped).read_bytes() == (
            ROOT / "node_modules" / "uplot" / source).read_bytes(), shipped
