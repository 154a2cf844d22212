"""docs/SOP.md states what the code does: the port table is the services' defaults, every
setting is documented, and the operations documents speak in the project's own words."""

from __future__ import annotations

import re

from auren.ops.procs import DEFAULT_PORTS
from auren.settings import Settings
from tests.deploy.tools import DOCS, ROOT, heading_anchors

NAMES = {"neuros": "NEUROS", "legacy": "Original Bridge", "bridge": "Enhanced Biometric Bridge",
         "gateway": "Gateway"}


def test_the_port_table_is_each_services_default_port():
    sop = (DOCS / "SOP.md").read_text()
    for service, port in DEFAULT_PORTS.items():
        row = re.search(rf"^\| {port} \| ([^|]+)\|", sop, re.M)
        assert row and row.group(1).startswith(NAMES[service]), (service, port)
        assert f"`auren serve {service}` default" in sop
    assert Settings.model_fields["sink_metrics_port"].default is None
    assert re.search(r"^\| 9001 \| the sink's", sop, re.M)


def test_every_setting_is_documented():
    documented = (ROOT / "README.md").read_text() + (ROOT / "docs" / "infra.md").read_text()
    missing = [name.upper() for name in Settings.model_fields
               if f"`{name.upper()}`" not in documented]
    assert missing == []


def test_unknown_variables_are_ignored_as_the_sop_says(monkeypatch):
    monkeypatch.setenv("AUREN_NOT_A_SETTING", "1")
    assert Settings.model_config["extra"] == "ignore"
    assert not hasattr(Settings(), "auren_not_a_setting")


def test_operations_documents_cite_only_the_repository():
    for name in ("SOP.md", "runbooks.md", "providers.md", "neuros.md", "DR.md"):
        text = (DOCS / name).read_text()
        # Paths are the repository's, from its root: none climbs out of it.
        assert "../" not in text, name
        for path in re.findall(r"`((?:auren|deploy|tests|docs|scripts|infra)/[\w./-]+)`", text):
            assert (ROOT / path.rstrip("/")).exists() or "<" in path, (name, path)


def test_links_between_the_operations_documents_resolve():
    """Every Markdown link from one document of docs/ to another (runbooks <-> DR, ...)
    reaches an existing file and, when it names one, an existing heading."""
    checked = 0
    for source in ("SOP.md", "runbooks.md", "DR.md"):
        text = (DOCS / source).read_text()
        for target, anchor in re.findall(r"\]\(([\w.-]+\.md)?(?:#([\w-]+))?\)", text):
            path = DOCS / (target or source)
            assert path.exists(), (source, target)
            if anchor:
                assert anchor in heading_anchors(path.read_text()), (source, target, anchor)
            checked += 1
    assert checked >= 10
