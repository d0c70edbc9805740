"""Export a home, import it elsewhere with another uid, verify: everything kept, owners mapped."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from .conftest import (
    ACL_UID,
    NEW_GID,
    NEW_UID,
    OLD_GID,
    OLD_UID,
    SMALL_FILES,
    SPARSE_SIZE,
    Exported,
    homes_cli,
    staging_dirs,
)


def _import(exported: Exported, target: Path, *extra: str):
    return homes_cli(
        "import", str(exported.tar), "--into", str(target), "--uid", str(NEW_UID), "--gid", str(NEW_GID), *extra
    )


def test_archive_checks_with_sha256sum(exported: Exported) -> None:
    proc = subprocess.run(["sha256sum", "-c", exported.sums.name], cwd=exported.tar.parent, capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.decode().splitlines() == ["alice.tar: OK", "alice.manifest.json: OK"]


def test_manifest_is_deterministic_and_complete(exported: Exported) -> None:
    code, first = homes_cli("manifest", str(exported.home))
    assert code == 0
    assert homes_cli("manifest", str(exported.home))[1] == first
    entries = {e["path"]: e for e in first["entries"]}
    assert first["totals"]["files"] == SMALL_FILES + 5  # the inode of the hard-link pair counted once
    assert entries["outside-link"] == dict(entries["outside-link"], type="symlink", target="/etc")
    assert not any(p.startswith("outside-link/") for p in entries)  # never followed
    assert first["hardlinks"] == [["a-hardlink", "b-hardlink"]]
    assert entries["sparse.img"]["sparse"] and entries["sparse.img"]["allocated"] < 1024 * 1024
    assert "system.posix_acl_default" in entries["shared"]["xattrs"]
    assert "user.metalab.test" in entries["notes.txt"]["xattrs"]
    assert "name\nwith newline" in entries


def test_import_keeps_everything_and_maps_owners(exported: Exported, target: Path) -> None:
    started = time.monotonic()
    code, result = _import(exported, target)
    took = time.monotonic() - started
    assert code == 0, result
    print(f"\n{SMALL_FILES} files: export {exported.export_s:.2f} s, import (extract, re-own, verify) {took:.2f} s")
    old, new = exported.home, target
    for path in old.rglob("*"):
        rel = path.relative_to(old)
        a, b = os.lstat(path), os.lstat(new / rel)
        assert stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode) and stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode)
        assert (b.st_uid, b.st_gid) == ((NEW_UID, NEW_GID) if a.st_uid == OLD_UID else (a.st_uid, a.st_gid)), rel
        if stat.S_ISREG(a.st_mode):
            assert path.read_bytes() == (new / rel).read_bytes(), rel
    assert stat.S_IMODE(os.lstat(new).st_mode) == 0o700 and os.lstat(new).st_uid == NEW_UID
    assert stat.S_IMODE(os.lstat(new / "private").st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(new / "private" / "secret").st_mode) == 0o600
    assert os.lstat(new / "private" / "secret").st_uid == 0
    assert os.readlink(new / "outside-link") == "/etc" and os.readlink(new / "dangling") == "does/not/exist"
    assert os.lstat(new / "a-hardlink").st_ino == os.lstat(new / "b-hardlink").st_ino
    assert os.lstat(new / "a-hardlink").st_ino != os.lstat(old / "a-hardlink").st_ino
    sparse = os.lstat(new / "sparse.img")
    assert sparse.st_size == SPARSE_SIZE and sparse.st_blocks * 512 < 1024 * 1024
    assert os.getxattr(new / "notes.txt", "user.metalab.test") == b"kept"
    assert list((new / "empty").iterdir()) == []
    assert (new / "name\nwith newline").read_text() == "odd name\n"
    acl = subprocess.run(["getfacl", "-n", "-p", str(new / "shared")], capture_output=True, text=True, check=True)
    assert f"user:{ACL_UID}:rwx" in acl.stdout and f"default:user:{ACL_UID}:r-x" in acl.stdout
    assert f"default:user:{NEW_UID}:rwx" in acl.stdout  # a named entry for her old uid follows her
    assert staging_dirs(target) == []
    m = str(exported.manifest)
    maps = ("--uid-map", f"{OLD_UID}:{NEW_UID}", "--gid-map", f"{OLD_GID}:{NEW_GID}")
    assert homes_cli("verify", str(new), "--manifest", m, *maps) == (
        0,
        {"home": str(new), "differences": [], "ok": True},
    )
    # a rerun of the finished import changes nothing and says so
    assert _import(exported, target)[1]["already_imported"] is True
    # verify lists what differs
    (new / "notes.txt").write_text("changed\n")
    os.chmod(new / "private", 0o755)
    code, result = homes_cli("verify", str(new), "--manifest", m, *maps)
    assert code == 1 and {d.split(":")[0] for d in result["details"]} == {"'notes.txt'", "'private'"}, result
    assert any("'notes.txt': sha256" in d for d in result["details"])
    assert any("'private': mode is 0o755, expected 0o700" in d for d in result["details"])


def test_import_into_an_empty_existing_home(exported: Exported, target: Path) -> None:
    target.mkdir()
    assert _import(exported, target)[0] == 0
    assert (target / "notes.txt").read_text() == "hello\n"


def test_export_to_stdout_piped_into_import_from_stdin(exported: Exported, target: Path) -> None:
    """The command line as a move would run it between hosts: the manifest first, then export --to - | import -."""
    manifest = target.parent / "alice.manifest.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    homes = f"{sys.executable} -m metalab.host.homes.cli"
    ids = f"--uid {NEW_UID} --gid {NEW_GID}"
    pipe = (
        f"set -o pipefail; {homes} manifest {exported.home} > {manifest}"
        f" && {homes} export {exported.home} --to - --json 2>/dev/null"
        f" | {homes} import - --manifest {manifest} --into {target} {ids} --json"
    )
    proc = subprocess.run(["bash", "-c", pipe], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["imported"] is True
    assert (target / "notes.txt").read_text() == "hello\n" and os.lstat(target).st_uid == NEW_UID
