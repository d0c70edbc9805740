"""Backups with real restic, and restores into a new dated folder that never touch her current files."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from metalab.host.backup import state

from .conftest import ALICE_UID, AS_ROOT, Lab, tree


def test_backup_then_restore_deleted_files_byte_identical_with_modes(lab: Lab) -> None:
    before = tree(lab.home("alice"))
    code, run = lab.cli("run")
    assert code == 0, run
    assert run["files"] == 6 and run["snapshot"]["size_bytes"] > 1_200_000
    code, status = lab.cli("status")
    assert code == 0 and status["last_snapshot"]["id"] == run["snapshot"]["id"]
    assert status["stale"] is False and status["last_error"] is None and status["age_s"] < 60

    shutil.rmtree(lab.home("alice") / "notebooks")
    (lab.home("alice") / "notes.txt").write_text("overwritten by a notebook cell\n")
    current = tree(lab.home("alice"))

    code, out = lab.cli("restore", "alice")
    assert code == 0, out
    target = Path(out["target"])
    assert target.parent == lab.home("alice") / "restored"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d{6}-[0-9a-f]{8}", target.name), target.name
    assert out["files"] == 5 and out["snapshot"] == run["snapshot"]["id"]
    assert tree(target) == before  # every file byte-identical, modes, owners and the link kept
    # her current files are as she left them; only restored/ is new
    after = {k: v for k, v in tree(lab.home("alice")).items() if not k.startswith("restored")}
    assert after == current
    restored = (lab.home("alice") / "restored").lstat()
    assert restored.st_uid == ALICE_UID and target.lstat().st_uid == ALICE_UID
    assert target.lstat().st_mode & 0o777 == 0o700
    assert not any((lab.homes / ".metalab-restore").iterdir())  # staging cleaned

    # A second restore of the same snapshot goes to a new name beside the first, which stays untouched.
    (target / "notes.txt").write_text("she edited the restored copy\n")
    code, again = lab.cli("restore", "alice")
    assert code == 0 and again["target"] == str(target) + "-2"
    assert (target / "notes.txt").read_text() == "she edited the restored copy\n"


def test_restore_one_path_before_a_time(lab: Lab) -> None:
    assert lab.cli("run")[0] == 0
    first = lab.cli("status")[1]["last_snapshot"]
    (lab.home("alice") / "notebooks" / "exp1.ipynb").write_bytes(b"a later version")
    assert lab.cli("run")[0] == 0
    code, snaps = lab.cli("snapshots", "alice")
    assert code == 0 and len(snaps["snapshots"]) == 2
    assert snaps["snapshots"][1]["id"] == first["id"]  # newest first
    assert set(snaps["snapshots"][0]) == {"id", "short_id", "time"}  # nothing else of the repository
    code, out = lab.cli("restore", "alice", "--path", "notebooks/", "--snapshot", first["id"][:8])
    assert code == 0, out
    got = tree(Path(out["target"]))
    assert set(got) == {"notebooks", "notebooks/exp1.ipynb", "notebooks/data", "notebooks/data/weights.bin"}
    assert (Path(out["target"]) / "notebooks/exp1.ipynb").read_bytes() != b"a later version"
    # --before the second snapshot picks the first one; a name with wildcard characters is matched literally
    later = state.parse_time(snaps["snapshots"][0]["time"]) - 0.001
    code, out = lab.cli("restore", "alice", "--path", "odd name [1]*.txt", "--before", state.iso(later + 1))
    assert code == 0 and out["files"] == 1


def test_quota_refusal_changes_nothing_and_a_smaller_path_fits(lab: Lab) -> None:
    assert lab.cli("run")[0] == 0
    lab.set_config(users={"alice": {"login": "alice", "home": str(lab.home("alice")), "quota_bytes": 1_500_000}})
    before = tree(lab.home("alice"))
    code, out = lab.cli("restore", "alice")
    assert code == 3 and out["code"] == "refused"
    assert "quota" in out["error"] and "needs" in out["error"]
    assert tree(lab.home("alice")) == before  # not even restored/ was made
    code, out = lab.cli("restore", "alice", "--path", "notes.txt")
    assert code == 0 and out["files"] == 1


def test_bad_input_is_refused_and_the_right_input_works(lab: Lab) -> None:
    assert lab.cli("run")[0] == 0
    before = tree(lab.homes)
    for args, words in [
        (["restore", "alice", "--path", "../bob"], "'..'"),
        (["restore", "alice", "--path", "notebooks/../../bob"], "'..'"),
        (["restore", "alice", "--path", "/etc/shadow"], "relative"),
        (["restore", "mallory"], "unknown user"),
        (["snapshots", "mallory"], "unknown user"),
        (["restore", "alice", "--snapshot", "zzzz;rm"], "snapshot id"),
        (["restore", "alice", "--snapshot", "0123abcd"], "no snapshot"),
        (["restore", "alice", "--before", "yesterday-ish"], "ISO"),
        (["restore", "alice", "--path", "no/such/folder"], "not in snapshot"),
    ]:
        code, out = lab.cli(*args)
        assert code == 2 and out["code"] == "bad-input" and words in out["error"], (args, out)
    assert tree(lab.homes) == before
    code, out = lab.cli("restore", "alice", "--path", "notebooks/data")
    assert code == 0 and out["files"] == 1


def test_a_planted_restored_link_is_never_followed(lab: Lab, tmp_path: Path) -> None:
    assert lab.cli("run")[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (lab.home("alice") / "restored").symlink_to(elsewhere)
    code, out = lab.cli("restore", "alice")
    assert code == 3 and "restored is not a directory" in out["error"]
    assert list(elsewhere.iterdir()) == []
    (lab.home("alice") / "restored").unlink()
    code, out = lab.cli("restore", "alice")
    assert code == 0 and Path(out["target"]).is_dir() and not Path(out["target"]).is_symlink()


def test_restore_host_refuses_a_non_empty_home_and_fills_an_empty_volume(lab: Lab) -> None:
    assert lab.cli("run")[0] == 0
    snapshot = {u: tree(lab.home(u)) for u in ("alice", "bob")}
    code, out = lab.cli("restore-host")
    assert code == 3 and out["code"] == "refused" and str(lab.home("alice")) in out["error"]
    assert {u: tree(lab.home(u)) for u in ("alice", "bob")} == snapshot

    # the disk is lost: a fresh, empty homes volume (bob's home already made again, empty)
    shutil.rmtree(lab.homes)
    lab.homes.mkdir()
    lab.home("bob").mkdir()
    if AS_ROOT:  # the rebuilt host gave bob another uid: lab_users made his empty home with it
        os.chown(lab.home("bob"), 5000, 5000)
    code, out = lab.cli("restore-host")
    assert code == 0, out
    assert out["homes"] == ["alice", "bob"]
    assert tree(lab.home("alice")) == snapshot["alice"]  # every checksum, mode and owner equal
    bob = {
        k: (kind, mode, 5000 if AS_ROOT else uid, digest) for k, (kind, mode, uid, digest) in snapshot["bob"].items()
    }
    assert tree(lab.home("bob")) == bob and lab.home("bob").lstat().st_uid == (5000 if AS_ROOT else os.getuid())
    if AS_ROOT:
        assert lab.home("alice").lstat().st_uid == ALICE_UID
    assert lab.home("alice").lstat().st_mode & 0o777 == 0o700
    assert not (lab.homes / ".metalab-restore").exists() or not any((lab.homes / ".metalab-restore").iterdir())
    assert os.listdir(lab.homes) != []
