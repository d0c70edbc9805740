"""A lab host's homes, a real restic repository on a local path and backup.json, all in a tmp dir.

restic is a requirement (the Makefile's APT_PACKAGES): without it these tests fail, they never skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from metalab.host.backup import cli

AS_ROOT = os.geteuid() == 0
ALICE_UID = 4242 if AS_ROOT else os.getuid()
BOB_UID = 4243 if AS_ROOT else os.getuid()


@dataclass
class Lab:
    root: Path
    homes: Path
    repo: Path
    config: Path
    password: Path
    state: Path

    def home(self, user: str) -> Path:
        return self.homes / user

    def cli(self, *args: str) -> Tuple[int, Dict[str, Any]]:
        """metalab-backup ARGS --json, in-process: (exit code, the JSON object it printed)."""
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main([*args, "--config", str(self.config), "--json"])
        text = out.getvalue().strip()
        return code, json.loads(text) if text else {}

    def set_config(self, **changes: Any) -> None:
        data = json.loads(self.config.read_text())
        data.update(changes)
        self.config.write_text(json.dumps(data))


def tree(path: Path) -> Dict[str, Tuple[str, int, int, str]]:
    """Every entry under path: relative path -> (kind, mode, uid, sha256 of a file or the target of a link)."""
    out: Dict[str, Tuple[str, int, int, str]] = {}
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(top) / name
            st = full.lstat()
            rel = str(full.relative_to(path))
            if full.is_symlink():
                out[rel] = ("link", 0, st.st_uid, os.readlink(full))
            elif full.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, st.st_uid, "")
            else:
                out[rel] = ("file", st.st_mode & 0o7777, st.st_uid, hashlib.sha256(full.read_bytes()).hexdigest())
    return out


def _own(path: Path, uid: int) -> None:
    if AS_ROOT:
        for top, dirs, files in os.walk(path):
            os.lchown(top, uid, uid)
            for name in dirs + files:
                os.lchown(os.path.join(top, name), uid, uid)


def fill_home(home: Path, uid: int, files: List[Tuple[str, bytes, int]]) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    for rel, data, mode in files:
        target = home / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    _own(home, uid)


ALICE_FILES = [
    ("notes.txt", b"alice's notes\n" * 100, 0o600),
    ("run.sh", b"#!/bin/sh\necho hi\n", 0o750),
    ("notebooks/exp1.ipynb", os.urandom(200_000), 0o644),
    ("notebooks/data/weights.bin", os.urandom(1_000_000), 0o640),
    ("odd name [1]*.txt", b"brackets and stars\n", 0o600),
]
BOB_FILES = [("thesis.tex", b"\\documentclass{article}\n" * 50, 0o644)]


PASSWORD = "correct horse battery staple\n"


@pytest.fixture(scope="session")
def empty_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One restic init per test session (its key derivation takes seconds); each test gets a copy."""
    if shutil.which("restic") is None:
        pytest.fail("restic is not installed (make deps installs it: APT_PACKAGES)")
    root = tmp_path_factory.mktemp("restic-template")
    (root / "password").write_text(PASSWORD)
    env = {"PATH": os.environ["PATH"], "HOME": str(root), "RESTIC_PASSWORD_FILE": str(root / "password")}
    subprocess.run(["restic", "init", "-q", "--repo", str(root / "repo")], env=env, check=True, capture_output=True)
    return root / "repo"


@pytest.fixture
def lab(tmp_path: Path, empty_repo: Path) -> Lab:
    homes = tmp_path / "homes"
    homes.mkdir()
    homes.chmod(0o755)
    fill_home(homes / "alice", ALICE_UID, ALICE_FILES)
    (homes / "alice" / "link-to-notes").symlink_to("notes.txt")
    _own(homes / "alice", ALICE_UID)
    fill_home(homes / "bob", BOB_UID, BOB_FILES)
    password = tmp_path / "etc" / "password"
    password.parent.mkdir()
    password.write_text(PASSWORD)
    password.chmod(0o600)
    repo = tmp_path / "repo"
    shutil.copytree(empty_repo, repo)
    state = tmp_path / "state"
    config = tmp_path / "etc" / "backup.json"
    config.write_text(json.dumps({
        "host": "lab1",
        "repository": str(repo),
        "password_file": str(password),
        "env_file": str(tmp_path / "etc" / "env"),
        "homes_root": str(homes),
        "keep": {"last": 3, "daily": 7, "weekly": 4, "monthly": 6},
        "max_age_s": 26 * 3600,
        "state_dir": str(state),
        "metrics_path": str(tmp_path / "metrics" / "metalab-backup.prom"),
        "users": {
            "alice": {"login": "alice", "home": str(homes / "alice"), "quota_bytes": 50_000_000},
            "bob": {"login": "bob", "home": str(homes / "bob"), "quota_bytes": None},
        },
        "ssh_key": str(tmp_path / "etc" / "id_ed25519"),
    }))  # fmt: skip
    return Lab(tmp_path, homes, repo, config, password, state)
