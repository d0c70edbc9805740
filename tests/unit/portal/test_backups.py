"""A user's own backups through the broker and the portal (issue 21): her snapshots and "restore this folder".

The broker serves for real on its unix socket (conftest.LabEnv); metalab.host.backup.api is replaced by FakeApi, which
records what the broker asked of it and answers like the contract says (ids, times and paths of snapshots, a dated
target folder, BackupError with a code)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from backup.conftest import (  # tests/unit/backup's homes and real repository
    ALICE_FILES,
    ALICE_UID,
    BOB_FILES,
    BOB_UID,
    PASSWORD,
    Lab,
    empty_repo,  # noqa: F401 - a fixture
    fill_home,
    tree,
)

from metalab.brokerapi.client import BrokerError, backup_restore, backup_snapshots
from metalab.host.broker import backups

from .conftest import LabEnv

REPOSITORY = "sftp:restic@vault.example:/srv/restic/lab1"
HOMES = "/srv/metalab/homes"
IDS = ["a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "0f1e2d3c" + "4b5a6978" * 7]


class FakeError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class FakeApi:
    """metalab.host.backup.api as the contract describes it; ``fail`` makes every call raise, ``fail_restore``
    only the restores."""

    BackupError = FakeError

    def __init__(self) -> None:
        self.restores: List[Dict[str, Any]] = []
        self.fail: Optional[Exception] = None
        self.fail_restore: Optional[Exception] = None

    def load_config(self, path: str) -> Dict[str, Any]:
        return dict(json.loads(Path(path).read_text()))

    def snapshots(self, cfg: Dict[str, Any], user: str) -> List[Dict[str, Any]]:
        if self.fail is not None:
            raise self.fail
        if user not in cfg["users"]:
            raise FakeError("bad-input", f"unknown user {user}")
        return [
            {"id": IDS[0], "short_id": IDS[0][:8], "time": "2026-11-30T12:03:11.123456789+00:00",
             "paths": [HOMES], "hostname": "lab1", "tree": "ffff"},
            {"id": IDS[1], "short_id": IDS[1][:8], "time": "2026-11-29T03:00:00+00:00", "paths": [HOMES]},
        ]  # fmt: skip

    def restore(
        self, cfg: Dict[str, Any], user: str, snapshot: Any = None, before: Any = None, path: Any = None
    ) -> Any:
        if (self.fail or self.fail_restore) is not None:
            raise self.fail or self.fail_restore  # type: ignore[misc]
        self.restores.append({"user": user, "snapshot": snapshot, "before": before, "path": path})
        home = cfg["users"][user]["home"]
        return {"target": f"{home}/restored/2026-11-30T120311-{snapshot[:8]}", "files": 3, "bytes": 4096,
                "snapshot": snapshot}  # fmt: skip


@pytest.fixture
def fake(env: LabEnv, monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    """Backups configured in the broker (a backup.json as the backup role writes it), served by FakeApi."""
    api = FakeApi()
    monkeypatch.setattr(backups, "backup_api", lambda: api)
    config = env.tmp / "backup.json"
    users = {u: {"login": f"lab-{u}", "home": f"{HOMES}/{u}", "quota_bytes": 2**30} for u in ("alice", "bob", "carol")}
    config.write_text(json.dumps({"host": "lab1", "repository": REPOSITORY, "users": users,
                                  "password_file": "/etc/metalab/backup/password"}))  # fmt: skip
    env.stop_broker()
    env.broker_data["backup_config"] = str(config)
    env.start_broker()
    return api


def error_of(call: Any) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        call()
    return info.value


# -- the broker ---------------------------------------------------------------------------------------------------


def test_she_sees_her_snapshots_ids_and_times_only(env: LabEnv, fake: FakeApi) -> None:
    result = backup_snapshots(env.client(), env.ticket("alice"))
    assert result["configured"] and result["user"] == "alice"
    assert [s["short_id"] for s in result["snapshots"]] == [IDS[0][:8], IDS[1][:8]]
    assert all(set(s) == {"id", "short_id", "time"} for s in result["snapshots"])
    assert HOMES not in json.dumps(result) and "vault" not in json.dumps(result)
    assert env.client().call("status", ticket=env.ticket("alice"))["backups"] is True


def test_restore_of_her_folder_goes_into_a_dated_folder(env: LabEnv, fake: FakeApi) -> None:
    result = backup_restore(env.client(), env.ticket("alice"), IDS[1][:8], "projects//thesis/./")
    assert fake.restores == [{"user": "alice", "snapshot": IDS[1], "before": None, "path": "projects/thesis"}]
    assert result["folder"] == f"restored/2026-11-30T120311-{IDS[1][:8]}"
    assert result["target"] == f"{HOMES}/alice/{result['folder']}"
    assert (result["files"], result["bytes"], result["path"]) == (3, 4096, "projects/thesis")
    assert result["snapshot"] == {"id": IDS[1], "short_id": IDS[1][:8], "time": "2026-11-29T03:00:00+00:00"}
    # no snapshot and no path: her whole home from the newest one
    backup_restore(env.client(), env.ticket("alice"))
    assert fake.restores[-1] == {"user": "alice", "snapshot": IDS[0], "before": None, "path": None}


def test_nobody_acts_for_another_user(env: LabEnv, fake: FakeApi) -> None:
    bob = env.ticket("bob")
    for op, fields in (("backup_snapshots", {}), ("backup_restore", {"path": "data"})):
        err = error_of(lambda op=op, fields=fields: env.client().call(op, ticket=bob, user="alice", **fields))
        assert err.code == "forbidden", op
        # the same call for himself works
        assert env.client().call(op, ticket=bob, user="bob", **fields)["user"] == "bob"
    assert [r["user"] for r in fake.restores] == ["bob"]
    assert error_of(lambda: env.client().call("backup_snapshots")).code == "unauthorized"
    assert error_of(lambda: env.client().call("backup_restore", ticket="forged")).code == "unauthorized"
    assert len(fake.restores) == 1


@pytest.mark.parametrize(
    "path",
    ["../alice", "data/../../alice", "..", "/srv/metalab/homes/alice", "/etc", "~alice/data", "data\n", "a\x00b",
     "x" * 5000, ["data"]],
)  # fmt: skip
def test_paths_outside_her_home_are_refused(env: LabEnv, fake: FakeApi, path: Any) -> None:
    err = error_of(lambda: env.client().call("backup_restore", ticket=env.ticket("bob"), path=path))
    assert err.code == "bad-request" and "path" in str(err)
    assert fake.restores == []


def test_only_her_own_snapshot_ids(env: LabEnv, fake: FakeApi) -> None:
    ticket = env.ticket("bob")
    for snapshot in ("deadbeef", "xyz", IDS[0].upper(), "a1b2c3d4; rm -rf /", 42):
        err = error_of(lambda s=snapshot: env.client().call("backup_restore", ticket=ticket, snapshot=s))
        assert err.code == "bad-request" and "snapshot" in str(err), snapshot
    assert fake.restores == []
    assert backup_restore(env.client(), ticket, IDS[0][:8])["snapshot"]["id"] == IDS[0]


def test_errors_are_clear_and_never_name_the_repository(env: LabEnv, fake: FakeApi) -> None:
    ticket = env.ticket("alice")
    fake.fail_restore = FakeError("refused", f"refused: data needs 3.0 GiB, 1.0 GiB left of the quota ({REPOSITORY})")
    err = error_of(lambda: backup_restore(env.client(), ticket, path="data"))
    assert err.code == "refused" and "1.0 GiB left of the quota" in str(err) and REPOSITORY not in str(err)
    fake.fail_restore = FakeError("busy", "another backup is running on this host")
    assert error_of(lambda: backup_restore(env.client(), ticket)).code == "busy"
    fake.fail_restore = FakeError("bad-input", "path data: not in the snapshot")
    assert error_of(lambda: backup_restore(env.client(), ticket, path="data")).code == "bad-request"
    fake.fail_restore = None
    for failure in (FakeError("failure", f"repository {REPOSITORY} unreachable: wrong password"), OSError("gone")):
        fake.fail = failure
        for call in (lambda: backup_snapshots(env.client(), ticket), lambda: backup_restore(env.client(), ticket)):
            err = error_of(call)
            assert err.code == "failure" and "cannot be used right now" in str(err)
            assert "vault" not in str(err) and "password" not in str(err)
    assert fake.restores == []
    fake.fail = None
    assert backup_restore(env.client(), ticket)["files"] == 3  # and it works again


def test_without_backups_nothing_is_offered(env: LabEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backups, "backup_api", lambda: pytest.fail("the api must not be loaded"))
    ticket = env.ticket("alice")
    assert backup_snapshots(env.client(), ticket) == {"user": "alice", "configured": False, "snapshots": []}
    assert error_of(lambda: backup_restore(env.client(), ticket)).code == "bad-request"
    assert env.client().call("status", ticket=ticket)["backups"] is False
    browser = env.browser()
    browser.login("alice")
    assert "Backups" not in browser.get("/").get_data(as_text=True)
    assert browser.get("/backups").status_code == 404


# -- the portal ---------------------------------------------------------------------------------------------------


def test_portal_lists_her_snapshots_and_restores_a_folder(env: LabEnv, fake: FakeApi) -> None:
    browser = env.browser()
    browser.login("alice")
    assert 'href="/backups"' in browser.get("/").get_data(as_text=True)
    page = browser.get("/backups").get_data(as_text=True)
    assert "2026-11-30 12:03:11 UTC" in page and IDS[0][:8] in page and IDS[1][:8] in page
    assert REPOSITORY not in page and HOMES not in page
    answer = browser.post("/backups/restore", {"snapshot": IDS[1], "path": "projects/thesis"}, csrf_from="/backups")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 200, text
    assert f'data-folder="restored/2026-11-30T120311-{IDS[1][:8]}"' in text and "3 files" in text
    assert fake.restores == [{"user": "alice", "snapshot": IDS[1], "before": None, "path": "projects/thesis"}]


def test_portal_restore_needs_csrf_and_her_own_name(env: LabEnv, fake: FakeApi) -> None:
    browser = env.browser()
    browser.login("bob")
    assert browser.post("/backups/restore", {"path": "data"}, csrf_from=None).status_code == 400
    assert browser.post("/backups/restore", {"path": "data", "csrf_token": "x"}, csrf_from=None).status_code == 400
    assert browser.post("/backups/restore", {"path": "data", "user": "alice"}, csrf_from="/backups").status_code == 403
    assert fake.restores == []
    assert browser.post("/backups/restore", {"path": "data", "user": "bob"}, csrf_from="/backups").status_code == 200
    assert fake.restores == [{"user": "bob", "snapshot": IDS[0], "before": None, "path": "data"}]


def test_portal_shows_refusals_as_clear_messages(env: LabEnv, fake: FakeApi) -> None:
    browser = env.browser()
    browser.login("bob")
    for path in ("../alice", "/srv/metalab/homes/alice"):
        answer = browser.post("/backups/restore", {"path": path}, csrf_from="/backups")
        assert answer.status_code == 400 and 'id="backup-error"' in answer.get_data(as_text=True), path
    answer = browser.post("/backups/restore", {"snapshot": "not-hex"}, csrf_from="/backups")
    assert answer.status_code == 400 and "snapshot" in answer.get_data(as_text=True)
    assert fake.restores == []
    fake.fail_restore = FakeError("refused", "refused: data needs 3.0 GiB, 1.0 GiB left of your quota")
    answer = browser.post("/backups/restore", {"path": "data"}, csrf_from="/backups")
    assert answer.status_code == 409 and "1.0 GiB left of your quota" in answer.get_data(as_text=True)
    fake.fail = FakeError("failure", f"{REPOSITORY}: connection refused")
    answer = browser.get("/backups")
    assert answer.status_code == 503 and "cannot be used right now" in answer.get_data(as_text=True)
    assert "vault" not in answer.get_data(as_text=True)


# -- the broker with the real metalab.host.backup.api and restic (tests/unit/backup's lab) ------------------------


@pytest.fixture
def restic_lab(env: LabEnv, empty_repo: Path) -> Lab:  # noqa: F811 - the fixture imported above
    """homes of alice and bob, a real repository with one backup of them, and the broker configured for it (the
    layout of tests/unit/backup's lab, under this test's own directory)."""
    root = env.tmp / "backup"
    homes = root / "homes"
    homes.mkdir(parents=True)
    fill_home(homes / "alice", ALICE_UID, ALICE_FILES)
    fill_home(homes / "bob", BOB_UID, BOB_FILES)
    password = root / "password"
    password.write_text(PASSWORD)
    password.chmod(0o600)
    repo = root / "repo"
    shutil.copytree(empty_repo, repo)
    users = {u: {"login": u, "home": str(homes / u), "quota_bytes": 50_000_000} for u in ("alice", "bob")}
    config = root / "backup.json"
    config.write_text(json.dumps({"host": "lab1", "repository": str(repo), "password_file": str(password),
                                  "env_file": str(root / "env"), "homes_root": str(homes), "keep": {"last": 3},
                                  "max_age_s": 3600, "state_dir": str(root / "state"), "users": users,
                                  "metrics_path": str(root / "metalab-backup.prom")}))  # fmt: skip
    lab = Lab(root, homes, repo, config, password, root / "state")
    assert lab.cli("run")[0] == 0
    env.stop_broker()
    env.broker_data["backup_config"] = str(config)
    env.start_broker()
    return lab


def test_real_restore_through_the_broker_is_byte_identical_and_only_her_own(env: LabEnv, restic_lab: Lab) -> None:
    alice, bob = env.ticket("alice"), env.ticket("bob")
    listed = backup_snapshots(env.client(), alice)["snapshots"]
    assert len(listed) == 1 and str(restic_lab.repo) not in json.dumps(listed)
    original = tree(restic_lab.home("alice") / "notebooks")
    shutil.rmtree(restic_lab.home("alice") / "notebooks")
    bob_before = tree(restic_lab.home("bob"))
    # bob: not her paths, not as her
    err = error_of(lambda: backup_restore(env.client(), bob, path="../alice/notebooks"))
    assert err.code == "bad-request"
    err = error_of(lambda: env.client().call("backup_restore", ticket=bob, user="alice", path="notebooks"))
    assert err.code == "forbidden"
    err = error_of(lambda: backup_restore(env.client(), bob, path="notebooks"))  # his home has none
    assert err.code == "bad-request" and "not in snapshot" in str(err)
    assert not (restic_lab.home("alice") / "restored").exists() and tree(restic_lab.home("bob")) == bob_before
    # alice: her folder, into a new dated folder, byte for byte with modes and owners
    result = backup_restore(env.client(), alice, listed[0]["short_id"], "notebooks")
    assert result["folder"].startswith("restored/") and result["files"] == 2
    assert tree(restic_lab.home("alice") / result["folder"] / "notebooks") == original
    assert not (restic_lab.home("alice") / "notebooks").exists()  # never put back over her files
    # a restore that does not fit her quota is refused, and nothing is written
    restic_lab.set_config(users={"alice": {"login": "alice", "home": str(restic_lab.home("alice")), "quota_bytes": 1}})
    before = tree(restic_lab.home("alice"))
    err = error_of(lambda: backup_restore(env.client(), alice, path="notebooks"))
    assert err.code == "refused" and "quota" in str(err)
    assert tree(restic_lab.home("alice")) == before
