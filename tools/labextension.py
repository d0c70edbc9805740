"""Build the metalab JupyterLab extension's prebuilt bundle (``make labextension``).

The source is roles/runtime_image/files/metalab-jupyterlab (TypeScript, a jupyter_server extension beside it); the
bundle is committed in its labextension/ folder, so neither ``make test`` nor a lab admin needs node. This script
copies the source into .cache/labext-build, installs the npm packages there (package-lock.json is kept in the
source), compiles it with JupyterLab's own builder (``jupyter labextension build`` from a venv holding the
JupyterLab version the runtime image installs, so the shared packages match) and copies the bundle back with the
sha256 of the source in its package.json (``metalab.source_sha256``): a unit test compares it with the source, so a
source changed without a rebuild fails ``make test``.

Needs node 20 and npm (the npm registry) and PyPI, on the developer's machine only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "roles" / "runtime_image" / "files" / "metalab-jupyterlab"
BUNDLE = SOURCE / "labextension"
CACHE = REPO / ".cache"
# The JupyterLab the runtime image installs (roles/runtime_image/defaults/main.yml, runtime_image_pip_packages).
JUPYTERLAB = "jupyterlab==4.5.11"
# What the bundle is built from: a change to any of these needs `make labextension`.
SOURCE_FILES = ("package.json", "package-lock.json", "tsconfig.json")
SOURCE_DIRS = ("src", "style")


def source_files(source: Path = SOURCE) -> List[Path]:
    files = [source / name for name in SOURCE_FILES if (source / name).is_file()]
    for directory in SOURCE_DIRS:
        files.extend(sorted(p for p in (source / directory).rglob("*") if p.is_file()))
    return files


def source_hash(source: Path = SOURCE) -> str:
    digest = hashlib.sha256()
    for path in source_files(source):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def bundle_hash(bundle: Path = BUNDLE) -> str:
    """The source hash recorded in the committed bundle ('' when there is none)."""
    try:
        meta = json.loads((bundle / "package.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    return str(meta.get("metalab", {}).get("source_sha256", ""))


def run(argv: List[str], cwd: Path) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, cwd=cwd, check=True)


def build() -> None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            sys.exit(f"make labextension needs {tool} (node 20 and npm)")
    work = CACHE / "labext-build"
    work.mkdir(parents=True, exist_ok=True)
    for name in SOURCE_FILES:
        if (SOURCE / name).is_file():
            shutil.copy2(SOURCE / name, work / name)
    for directory in (*SOURCE_DIRS, "lib", "labextension"):
        shutil.rmtree(work / directory, ignore_errors=True)
    (work / "tsconfig.tsbuildinfo").unlink(missing_ok=True)  # else tsc thinks the removed lib/ is up to date
    for directory in SOURCE_DIRS:
        shutil.copytree(SOURCE / directory, work / directory)
    run(["npm", "ci" if (work / "package-lock.json").is_file() else "install", "--no-audit", "--no-fund"], work)
    shutil.copy2(work / "package-lock.json", SOURCE / "package-lock.json")
    run([str(work / "node_modules" / ".bin" / "tsc")], work)
    venv = CACHE / "labext-venv"
    jupyter = venv / "bin" / "jupyter"
    stamp = venv / "metalab-requirement"
    if not stamp.is_file() or stamp.read_text() != JUPYTERLAB:
        run([sys.executable, "-m", "venv", "--clear", str(venv)], REPO)
        run([str(venv / "bin" / "pip"), "install", "-q", JUPYTERLAB], REPO)
        stamp.write_text(JUPYTERLAB)
    run([str(jupyter), "labextension", "build", "."], work)
    shutil.rmtree(BUNDLE, ignore_errors=True)
    shutil.copytree(work / "labextension", BUNDLE)
    meta_path = BUNDLE / "package.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["metalab"] = {"source_sha256": source_hash()}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"bundle in {BUNDLE.relative_to(REPO)}: {', '.join(sorted(os.listdir(BUNDLE / 'static')))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the bundle matches its source")
    args = parser.parse_args()
    if args.check:
        if bundle_hash() != source_hash():
            sys.exit(f"{BUNDLE.relative_to(REPO)} is not built from the current source: run make labextension")
        print("the labextension bundle matches its source")
        return
    build()


if __name__ == "__main__":
    main()
