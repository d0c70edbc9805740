"""A lab user's home with every kind of entry, exported once per session, all in a tmp dir, as root.

Root, setfacl/getfacl (the Makefile's APT_PACKAGES: acl) and a tmp filesystem with ACLs and user xattrs are
requirements: without them these tests fail, they never skip.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from metalab.host.homes import cli

OLD_UID, OLD_GID = 4242, 4343
NEW_UID, NEW_GID = 5151, 5252
ACL_UID = 4300
SMALL_FILES = 3000
SPARSE_SIZE = 64 * 1024 * 1024 + 5


def homes_cli(*args: str) -> Tuple[int, Dict[str, Any]]:
    """python3 -m metalab.host.homes.cli ARGS --json, in-process: (exit code, the JSON object it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*args, "--json"])
    return code, json.loads(out.getvalue())


def _requirements(where: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/unit/homes must run as root (make test does): they chown, set ACLs and xattrs")
    for tool in ("setfacl", "getfacl", "tar", "sha256sum"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: install the Makefile's APT_PACKAGES (acl)")
    probe = where / "probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.metalab.probe", b"1")
        subprocess.run(["setfacl", "-m", f"u:{ACL_UID}:r", str(probe)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"{where}'s filesystem must support user xattrs and POSIX ACLs: {exc}")
    probe.unlink()


def make_home(home: Path) -> None:
    """A home with a few thousand small files and one of every awkward thing, owned by OLD_UID/OLD_GID."""
    home.mkdir(mode=0o700)
    for i in range(SMALL_FILES):
        sub = home / "many" / f"d{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}.txt").write_text(f"file {i}\n" * (i % 7 + 1))
    with open(home / "sparse.img", "wb") as out:
        out.truncate(SPARSE_SIZE)
        out.seek(32 * 1024 * 1024)
        out.write(b"the middle")
    (home / "notes.txt").write_text("hello\n")
    os.symlink("notes.txt", home / "rel-link")
    os.symlink("/etc", home / "outside-link")  # a directory outside the home: kept as a link, never followed
    os.symlink("does/not/exist", home / "dangling")
    (home / "a-hardlink").write_text("shared inode\n")
    os.link(home / "a-hardlink", home / "b-hardlink")
    os.setxattr(home / "notes.txt", "user.metalab.test", b"kept")
    (home / "private").mkdir(mode=0o700)
    (home / "private" / "secret").write_text("s3cret\n")
    os.chmod(home / "private" / "secret", 0o600)
    (home / "empty").mkdir()
    (home / "name\nwith newline").write_text("odd name\n")
    (home / "shared").mkdir()
    subprocess.run(
        ["setfacl", "-m", f"u:{ACL_UID}:rwx,d:u:{ACL_UID}:rx,d:u:{OLD_UID}:rwx", str(home / "shared")], check=True
    )
    for path in [home, *home.rglob("*")]:
        os.lchown(path, OLD_UID, OLD_GID)
    os.lchown(home / "private" / "secret", 0, 0)  # a root-owned file keeps its owner


@dataclass
class Exported:
    root: Path
    home: Path
    tar: Path
    manifest: Path
    sums: Path
    export_s: float


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("homes")
    _requirements(root)
    home = root / "old" / "alice"
    home.parent.mkdir()
    make_home(home)
    (root / "archive").mkdir()
    tar = root / "archive" / "alice.tar"
    started = time.monotonic()
    code, result = homes_cli("export", str(home), "--to", str(tar))
    took = time.monotonic() - started
    assert code == 0, result
    return Exported(root, home, tar, root / "archive" / "alice.manifest.json", root / "archive" / "alice.sha256", took)


@pytest.fixture
def target(exported: Exported, tmp_path: Path) -> Path:
    """Where a fresh import goes: <tmp>/homes/alice, its parent on the same filesystem as tmp."""
    (tmp_path / "homes").mkdir()
    return tmp_path / "homes" / "alice"


def staging_dirs(target: Path) -> list:
    stage = target.parent / ".metalab-move"
    return sorted(p.name for p in stage.iterdir() if p.is_dir()) if stage.exists() else []
