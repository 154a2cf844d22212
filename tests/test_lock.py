"""Every install the project does for itself comes from uv.lock, and the lock is current."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv", path=str(Path(sys.executable).parent))


def _lock() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def test_every_locked_package_carries_hashes():
    for package in _lock()["package"]:
        if package.get("source", {}).get("editable") or package["name"] == "auren":
            continue
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files, package["name"]
        assert all(f["hash"].startswith("sha256:") for f in files), package["name"]


def test_dev_tools_are_locked_too():
    names = {p["name"] for p in _lock()["package"]}
    assert {"ruff", "mypy", "pytest", "types-psutil", "types-pyyaml", "uv"} <= names


def test_install_surfaces_use_the_lock_and_refuse_a_stale_one():
    install = (ROOT / "scripts" / "install").read_text()
    assert "uv sync" in install and "--locked" in install
    assert "--require-hashes" in install
    assert "-e '.[dev]'" not in install, "nothing resolves at install time"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"uv sync --locked", dockerfile)
    assert "COPY pyproject.toml uv.lock" in dockerfile
    assert "--require-hashes" in dockerfile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/install" in ci
    assert "uv lock --check" in (ROOT / "scripts" / "test").read_text()


def test_the_bootstrap_installs_the_uv_the_lock_names():
    printed = subprocess.run([sys.executable, str(ROOT / "scripts" / "uv_requirement.py")],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    locked = next(p for p in _lock()["package"] if p["name"] == "uv")
    assert printed.startswith(f"uv=={locked['version']} --hash=sha256:")
    assert UV is not None
    running = subprocess.run([UV, "--version"], capture_output=True, text=True, check=True,
                             timeout=30).stdout.split()[1]
    assert running == locked["version"]


def test_the_lock_matches_pyproject_and_a_drifted_pyproject_is_refused(tmp_path):
    assert UV is not None
    current = subprocess.run([UV, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, check=False)
    assert current.returncode == 0, current.stderr
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(
        pyproject.replace('"rich>=13,<16",', '"rich>=13,<16",\n    "no-such-package-auren",', 1))
    drifted = subprocess.run([UV, "lock", "--check", "--offline"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=False)
    assert drifted.returncode != 0
