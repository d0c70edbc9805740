"""Refusals and failures change nothing; an interrupted import leaves only its staging dir, and a rerun finishes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import NEW_GID, NEW_UID, Exported, homes_cli, staging_dirs


def _import(tar: Path, target: Path, *extra: str):
    return homes_cli("import", str(tar), "--into", str(target), "--uid", str(NEW_UID), "--gid", str(NEW_GID), *extra)


def test_a_non_empty_target_is_refused_and_kept(exported: Exported, target: Path) -> None:
    target.mkdir()
    (target / "hers").write_text("already here\n")
    code, result = _import(exported.tar, target)
    assert (code, result["code"]) == (3, "refused"), result
    assert [p.name for p in target.iterdir()] == ["hers"] and staging_dirs(target) == []


def test_the_quota_is_checked_first(exported: Exported, target: Path) -> None:
    code, result = homes_cli("manifest", str(exported.home))
    need = result["totals"]["allocated_bytes"]
    code, result = _import(exported.tar, target, "--quota-bytes", str(need - 1))
    assert (code, result["code"]) == (3, "refused") and "quota" in result["error"], result
    assert not target.exists() and staging_dirs(target) == []
    assert _import(exported.tar, target, "--quota-bytes", str(need))[0] == 0


def test_an_existing_archive_is_never_overwritten(exported: Exported) -> None:
    before = exported.tar.stat()
    code, result = homes_cli("export", str(exported.home), "--to", str(exported.tar))
    assert (code, result["code"]) == (3, "refused"), result
    assert exported.tar.stat().st_mtime_ns == before.st_mtime_ns


def _corrupt_copy(exported: Exported, where: Path) -> Path:
    """A copy of the archive with one byte of notes.txt's content changed."""
    where.mkdir()
    for src in (exported.tar, exported.manifest, exported.sums):
        shutil.copy(src, where / src.name)
    tar = where / exported.tar.name
    data = bytearray(tar.read_bytes())
    at = data.index(b"hello\n")
    assert data.count(b"hello\n") == 1
    data[at] = ord("j")
    tar.write_bytes(bytes(data))
    return tar


def test_a_damaged_archive_fails_its_checksum_before_anything_changes(exported: Exported, target: Path) -> None:
    tar = _corrupt_copy(exported, target.parent.parent / "damaged")
    code, result = _import(tar, target)
    assert code == 1 and "checksum" in result["error"], result
    assert not target.exists() and staging_dirs(target) == []


def test_a_copy_that_does_not_match_the_manifest_is_never_switched_to(exported: Exported, target: Path) -> None:
    tar = _corrupt_copy(exported, target.parent.parent / "damaged")
    tar.with_suffix(".sha256").unlink()  # no archive checksum: the staged tree's verification catches it
    code, result = _import(tar, target)
    assert code == 1 and "does not match the manifest" in result["error"], result
    assert any("'notes.txt': sha256" in d for d in result["details"]), result
    assert not target.exists() and staging_dirs(target) == []


def test_bad_input_is_refused(exported: Exported, target: Path) -> None:
    os.symlink(exported.home, target.parent / "link-to-alice")
    for args in (
        ("manifest", str(target.parent / "link-to-alice")),  # a home that is a link is not followed
        ("manifest", "relative/home"),
        ("manifest", f"{exported.home}/../alice"),
        ("export", str(exported.home), "--to", "archive.tar"),
        ("import", str(exported.tar), "--into", f"{target.parent}/../x", "--uid", "1", "--gid", "1"),
        ("import", str(exported.tar), "--into", "homes/alice", "--uid", "1", "--gid", "1"),
        ("verify", str(exported.home), "--manifest", str(exported.manifest), "--uid-map", "a:b"),
        (
            "import",
            str(exported.tar),
            "--into",
            str(target),
            "--uid",
            "1",
            "--gid",
            "1",
            "--manifest",
            str(exported.tar),
        ),
    ):
        code, result = homes_cli(*args)
        assert (code, result["code"]) == (2, "bad-input"), (args, result)
    assert not target.exists()


KILL_AFTER_EXTRACT = """
import os, signal, sys
from metalab.host.homes import archive, cli
real = archive._reown
def reown(root, *args):
    real(root, *args)
    os.kill(os.getpid(), signal.SIGKILL)  # killed between extraction and the switch
archive._reown = reown
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_interrupted_import_is_finished_by_a_rerun(exported: Exported, target: Path) -> None:
    args = ["import", str(exported.tar), "--into", str(target), "--uid", str(NEW_UID), "--gid", str(NEW_GID)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_EXTRACT, *args], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not target.exists() and len(staging_dirs(target)) == 1
    code, result = _import(exported.tar, target)
    assert code == 0 and result["imported"], result
    assert staging_dirs(target) == [] and (target / "notes.txt").read_text() == "hello\n"


def test_an_interrupted_export_is_finished_by_a_rerun(exported: Exported, tmp_path: Path) -> None:
    """Leftovers without the tar (renamed last) are an unfinished export: the rerun replaces them."""
    for name in ("alice.tar.part", "alice.manifest.json", "alice.sha256.part"):
        (tmp_path / name).write_text("half written")
    code, result = homes_cli("export", str(exported.home), "--to", str(tmp_path / "alice.tar"))
    assert code == 0, result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.manifest.json", "alice.sha256", "alice.tar"]
    assert subprocess.run(["sha256sum", "-c", "alice.sha256"], cwd=tmp_path, capture_output=True).returncode == 0
