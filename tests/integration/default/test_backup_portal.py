"""A user restores her own folder from a backup through the portal, in a real browser (issue 21), and nobody else's.

The default scenario backs up to a local restic repository (molecule.yml: lab_backup_repository). alice has a
folder `thesis` (text, a binary, modes, a symlink) and a folder `keep`; a backup runs (metalab-backup.service, as its
timer would start it); `thesis` is deleted; alice logs in to the portal in chromium, opens Backups, picks the newest
snapshot, types `thesis` and presses "Restore this folder". The page names the new dated folder, and on the host that
folder holds `thesis` byte for byte (sha256), with the owners, modes and link targets of the originals; `keep` and
the rest of her home are untouched, and `thesis` is not recreated in place.

The attacks, each paired with the legitimate action through the same harness: bob, logged in to the portal, cannot
restore alice's folders (`../alice/...`, absolute paths; his own folder restores), his Backups page shows nothing of
alice or of the repository, a `restored` link he plants into alice's home is refused, not followed; through the
broker's socket (as the portal account, the most a compromised portal has) his ticket cannot list or restore for
alice, nor restore her paths, while his own list and restore work.

Numbers (backup time, repository size next to the homes' size) go to stdout and artifacts/backup-numbers.json.
"""

import base64
import json
import re
import time

import pytest
from conftest import ok, root

HOMES = "/srv/metalab/homes"
ALICE = f"{HOMES}/alice"
BOB = f"{HOMES}/bob"
REPOSITORY = "/var/backups/metalab-repo"
PASSWORD_FILE = "/etc/metalab/backup/password"

ALICE_FILES = r"""
set -e
cd ~
rm -rf thesis keep restored
mkdir -p thesis/data thesis/notes keep
printf 'Chapter 1\n\nIt was a dark and stormy night.\n' > thesis/chapter1.txt
head -c 3000000 /dev/urandom > thesis/data/results.bin
printf 'x,y\n1,2\n' > thesis/data/table.csv
printf '#!/bin/sh\necho analyse\n' > thesis/analyse.sh && chmod 0750 thesis/analyse.sh
printf 'private\n' > thesis/notes/todo.md && chmod 0600 thesis/notes/todo.md
chmod 0750 thesis/notes
ln -s chapter1.txt thesis/latest
printf 'keep me\n' > keep/diary.txt
"""
BOB_FILES = r"""
set -e
cd ~
rm -rf secret restored
mkdir secret
printf 'bob plan\n' > secret/plan.txt
"""


def as_user(host, login, script):
    encoded = base64.b64encode(script.encode()).decode()
    ok(host, "echo %s | base64 -d | runuser -u %s -- sh -s", encoded, login)


def manifest(host, top):
    """{relative path: (type, owner, group, mode, link target, sha256 or '')} of everything under TOP."""
    lines = ok(host, "cd %s && find . -mindepth 1 -printf '%%P|%%y|%%u|%%g|%%m|%%l\\n'", top).splitlines()
    sums = {}
    for line in ok(host, "cd %s && find . -type f -exec sha256sum {} +", top).splitlines():
        digest, name = line.split(None, 1)
        sums[name[2:] if name.startswith("./") else name] = digest
    out = {}
    for line in lines:
        path, kind, user, group, mode, target = line.split("|")
        out[path] = (kind, user, group, mode, target, sums.get(path, ""))
    return out


def du_bytes(host, path):
    return int(ok(host, "du -sb %s", path).split()[0])


@pytest.fixture(scope="module")
def backed_up(host, artifacts):
    """alice's and bob's files, then one backup (metalab-backup.service); its snapshot and the numbers."""
    for user in ("alice", "bob"):  # no runtime writes into the homes meanwhile
        root(host, "metalab-guard stop %s", user)
    as_user(host, "lab-alice", ALICE_FILES)
    as_user(host, "lab-bob", BOB_FILES)
    before = {"thesis": manifest(host, f"{ALICE}/thesis"), "keep": manifest(host, f"{ALICE}/keep")}
    started = time.monotonic()
    ok(host, "systemctl start metalab-backup.service")
    seconds = time.monotonic() - started
    status = json.loads(ok(host, "metalab-backup status --json"))
    assert status["last_snapshot"] and status["last_error"] is None, status
    numbers = {
        "backup_seconds": round(seconds, 1),
        "homes_bytes": du_bytes(host, HOMES),
        "repository_bytes": du_bytes(host, REPOSITORY),
        "snapshot": status["last_snapshot"],
    }
    print(f"backup: {json.dumps(numbers)}")
    (artifacts / "backup-numbers.json").write_text(json.dumps(numbers, indent=2))
    yield {"snapshot": status["last_snapshot"], "before": before}
    root(host, "rm -rf %s/restored %s/restored", ALICE, BOB)


@pytest.fixture
def no_restores(host):
    """No restored/ folder in alice's or bob's home before and after the test."""
    root(host, "rm -rf %s/restored %s/restored", ALICE, BOB)
    yield
    root(host, "rm -rf %s/restored %s/restored", ALICE, BOB)


def test_alice_restores_her_deleted_folder_in_the_browser(
    host, base_url, passwords, backed_up, no_restores, page, artifacts
):
    snapshot = backed_up["snapshot"]
    ok(host, "rm -rf %s/thesis", ALICE)  # the accident
    outside = manifest(host, ALICE)  # the rest of her home, as it is now

    page.goto(base_url + "/login")
    page.fill("#username", "alice")
    page.fill("#password", passwords["alice"])
    page.click("#login-button")
    page.click("#backups-link")
    page.wait_for_selector("#snapshots")
    newest = page.locator("#snapshots tbody tr").first
    assert newest.get_attribute("data-id") == snapshot["id"][:8]
    html = page.content()
    assert REPOSITORY not in html and "molecule-default-backup-password" not in html and BOB not in html
    page.screenshot(path=str(artifacts / "backup-1-snapshots.png"))

    started = time.monotonic()
    page.fill("#restore-path", "thesis")
    page.click("#restore-button")
    page.wait_for_selector("#restore-result", timeout=120_000)
    print(f"restore through the portal: {time.monotonic() - started:.1f}s")
    page.screenshot(path=str(artifacts / "backup-2-restored.png"))
    folder = page.get_attribute("#restore-result", "data-folder")
    assert re.fullmatch(r"restored/[0-9T-]+-" + snapshot["id"][:8] + r"(-\d+)?", folder), folder
    assert folder in page.inner_text("#restore-result")

    # byte for byte, with the owners, modes and link targets of the originals
    assert manifest(host, f"{ALICE}/{folder}/thesis") == backed_up["before"]["thesis"]
    assert host.file(f"{ALICE}/{folder}").user == "lab-alice"
    assert host.file(f"{ALICE}/restored").user == "lab-alice"
    # nothing else changed: not put back in place, her other files as they were
    assert not host.file(f"{ALICE}/thesis").exists
    assert manifest(host, f"{ALICE}/keep") == backed_up["before"]["keep"]
    now = {p: v for p, v in manifest(host, ALICE).items() if p != "restored" and not p.startswith("restored/")}
    assert now == outside


# --- bob through the portal ----------------------------------------------------------------------------------------


def restore_as(client, path, snapshot=""):
    return client.post("/backups/restore", {"path": path, "snapshot": snapshot}, csrf_from="/backups")


def error_of(answer):
    match = re.search(r'id="backup-error"[^>]*>([^<]+)', answer.body)
    return match.group(1).strip() if match else ""


def test_bob_cannot_restore_alices_folders_through_the_portal(host, portal_client, passwords, backed_up, no_restores):
    alice_before = manifest(host, ALICE)
    bob = portal_client()
    bob.login("bob", passwords["bob"])
    page = bob.get("/backups")
    assert page.status == 200 and backed_up["snapshot"]["id"][:8] in page.body
    assert "alice" not in page.body and REPOSITORY not in page.body
    for path in ("../alice/thesis", "../alice", "secret/../../alice", f"{ALICE}/thesis", "/etc", "~alice/thesis"):
        answer = restore_as(bob, path)
        assert answer.status == 400 and "path" in error_of(answer), (path, answer)
    answer = restore_as(bob, "thesis")  # alice's folder name, not in his home
    assert answer.status == 400 and "not in snapshot" in error_of(answer), answer
    # as another user: the form's user field naming alice
    answer = bob.post("/backups/restore", {"path": "secret", "user": "alice"}, csrf_from="/backups")
    assert answer.status == 403, answer
    assert not host.file(f"{BOB}/restored").exists
    # the legitimate restore of his own folder, through the same form
    answer = restore_as(bob, "secret", backed_up["snapshot"]["id"])
    assert answer.status == 200, answer
    folder = re.search(r'data-folder="([^"]+)"', answer.body).group(1)
    assert ok(host, "cat %s/%s/secret/plan.txt", BOB, folder) == "bob plan\n"
    assert ok(host, "find %s/restored -type f -printf '%%P\\n'", BOB).split() == [f"{folder[9:]}/secret/plan.txt"]
    assert manifest(host, ALICE) == alice_before


def test_a_restored_link_into_alices_home_is_refused(host, portal_client, passwords, backed_up, no_restores):
    alice_before = manifest(host, ALICE)
    ok(host, "runuser -u lab-bob -- ln -s %s %s/restored", ALICE, BOB)
    bob = portal_client()
    bob.login("bob", passwords["bob"])
    answer = restore_as(bob, "secret")
    assert answer.status == 409 and "restored is not a directory" in error_of(answer), answer
    assert manifest(host, ALICE) == alice_before
    # without the link, the same restore works
    ok(host, "rm %s/restored", BOB)
    assert restore_as(bob, "secret").status == 200
    assert manifest(host, ALICE) == alice_before


# --- bob's ticket on the broker's socket, as the portal account ------------------------------------------------------

BROKER_PROBE = r"""
import json, socket, sys
password, alice_home = sys.stdin.readline().strip(), sys.argv[1]
def call(**req):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect("/run/metalab/broker.sock")
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
ticket = call(op="login", user="bob", password=password)["result"]["ticket"]
out = {
    "list_alice": call(op="backup_snapshots", ticket=ticket, user="alice"),
    "restore_alice": call(op="backup_restore", ticket=ticket, user="alice", path="thesis"),
    "dotdot": call(op="backup_restore", ticket=ticket, path="../alice/thesis"),
    "absolute": call(op="backup_restore", ticket=ticket, path=alice_home + "/thesis"),
    "snapshot_option": call(op="backup_restore", ticket=ticket, snapshot="--target=/", path="secret"),
    "no_ticket": call(op="backup_snapshots", user="alice"),
    "list_own": call(op="backup_snapshots", ticket=ticket),
    "restore_own": call(op="backup_restore", ticket=ticket, user="bob", path="secret"),
}
print(json.dumps(out))
"""


def test_bobs_ticket_on_the_broker_socket_reaches_only_his_own_backups(host, passwords, backed_up, no_restores):
    alice_before = manifest(host, ALICE)
    script = base64.b64encode(BROKER_PROBE.encode()).decode()
    secret = base64.b64encode((passwords["bob"] + "\n").encode()).decode()
    out = json.loads(
        ok(
            host,
            "echo %s | base64 -d > /tmp/metalab-backup-probe.py && chmod 0644 /tmp/metalab-backup-probe.py && "
            "echo %s | base64 -d | sudo -u metalab-portal python3 /tmp/metalab-backup-probe.py %s",
            script,
            secret,
            ALICE,
        )
    )
    root(host, "rm -f /tmp/metalab-backup-probe.py")
    for key, code in (
        ("list_alice", "forbidden"),
        ("restore_alice", "forbidden"),
        ("dotdot", "bad-request"),
        ("absolute", "bad-request"),
        ("snapshot_option", "bad-request"),
        ("no_ticket", "unauthorized"),
    ):
        assert out[key]["ok"] is False and out[key]["error"]["code"] == code, (key, out[key])  # fmt: skip
    snapshots = out["list_own"]["result"]["snapshots"]
    assert snapshots and all(set(s) == {"id", "short_id", "time"} for s in snapshots), out["list_own"]
    assert REPOSITORY not in json.dumps(out)
    own = out["restore_own"]["result"]
    assert own["user"] == "bob" and own["target"].startswith(f"{BOB}/restored/"), own
    assert ok(host, "cat %s/secret/plan.txt", own["target"]) == "bob plan\n"
    assert manifest(host, ALICE) == alice_before
