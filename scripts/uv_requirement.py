"""Print a pip requirement for the exact uv that uv.lock names, with every hash the lock has.

`scripts/install` feeds it to `pip install --require-hashes`, so the tool that installs the
locked environment is itself locked: one source of truth (uv.lock), no second pin to drift.
"""

import sys
import tomllib
from pathlib import Path

lock = tomllib.loads((Path(__file__).resolve().parent.parent / "uv.lock").read_text())
for package in lock["package"]:
    if package["name"] == "uv":
        hashes = [wheel["hash"] for wheel in package.get("wheels", [])]
        if "sdist" in package:
            hashes.append(package["sdist"]["hash"])
        print(f"uv=={package['version']} " + " ".join(f"--hash={h}" for h in hashes))
        break
else:
    sys.exit("uv.lock names no uv package: add it to the dev extra and run `uv lock`")
