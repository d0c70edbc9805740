"""The broker, called over its real unix socket as the portal account would call it."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from simulated_podman import WITH_SIMULATED_PODMAN

from metalab.brokerapi.client import BrokerError
from metalab.host.broker import cli
from metalab.host.broker.auth import AuthStore, hash_password, parse_hash, token_digest, verify_password
from metalab.host.broker.config import BrokerConfigError, ScryptParams, parse_config
from metalab.host.broker.tickets import TicketSigner, load_or_create_key

from .conftest import PASSWORDS, LabEnv, wait_for

SRC = str(Path(__file__).resolve().parents[3] / "src")


def error_of(call) -> BrokerError:  # type: ignore[no-untyped-def]
    with pytest.raises(BrokerError) as info:
        call()
    return info.value


# -- passwords ----------------------------------------------------------------------------------------------------


def test_scrypt_hash_records_its_parameters_and_verifies() -> None:
    encoded = hash_password("correct horse", ScryptParams(n=2**14))
    params, salt, key = parse_hash(encoded)
    assert encoded.startswith("$scrypt$n=16384,r=8,p=1$")
    assert (params.n, len(salt), len(key)) == (2**14, 16, 32)
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsE", encoded)
    assert not verify_password("x", "$bcrypt$garbage")
    assert hash_password("correct horse", ScryptParams(n=2**14)) != encoded  # salted


def test_password_files_are_root_only_and_hold_no_cleartext(env: LabEnv) -> None:
    config = env.broker_config
    for path in (config.passwords, config.state, config.key):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    text = Path(config.passwords).read_text()
    assert all(pw not in text for pw in PASSWORDS.values())
    os.chmod(config.passwords, 0o644)
    err = error_of(lambda: env.client().call("login", user="alice", password=PASSWORDS["alice"]))
    assert err.code == "failure" and "chmod 600" in str(err)


def test_weak_passwords_are_refused(env: LabEnv) -> None:
    store = AuthStore(env.broker_config)
    with pytest.raises(Exception, match="at least 10 characters"):
        store.set_password("alice", "short")
    with pytest.raises(Exception, match="must not be the user name"):
        store.set_password("alicealice", "AliceAlice")


def test_config_refuses_world_reachable_socket_and_weak_scrypt(env: LabEnv) -> None:
    with pytest.raises(BrokerConfigError, match="every local user"):
        parse_config(dict(env.broker_data, socket_mode="0666"))
    with pytest.raises(BrokerConfigError, match="scrypt.n"):
        parse_config(dict(env.broker_data, scrypt={"n": 1024}))


# -- login, lockout, timing ---------------------------------------------------------------------------------------


def test_login_ok_wrong_and_unknown(env: LabEnv) -> None:
    broker = env.client()
    result = broker.call("login", user="alice", password=PASSWORDS["alice"])
    assert result["user"] == "alice" and result["admin"] is False and result["ticket"]
    assert broker.call("whoami", ticket=result["ticket"])["user"] == "alice"
    wrong = error_of(lambda: broker.call("login", user="alice", password="not-the-password"))
    unknown = error_of(lambda: broker.call("login", user="mallory", password="not-the-password"))
    bad_name = error_of(lambda: broker.call("login", user="../etc", password="not-the-password"))
    assert wrong.code == unknown.code == bad_name.code == "invalid"
    assert str(wrong) == str(unknown) == str(bad_name) == "wrong user name or password"
    assert broker.call("login", user="carol", password=PASSWORDS["carol"])["admin"] is True


def test_lockout_after_five_failures_then_unlock(env: LabEnv) -> None:
    broker = env.client()
    for _ in range(4):
        assert error_of(lambda: broker.call("login", user="bob", password="wrong-password")).code == "invalid"
    fifth = error_of(lambda: broker.call("login", user="bob", password="wrong-password"))
    assert fifth.code == "locked" and "locked until" in str(fifth) and "try again in 15m" in str(fifth)
    # Locked means locked: the right password does not get in either.
    assert error_of(lambda: broker.call("login", user="bob", password=PASSWORDS["bob"])).code == "locked"
    # Unknown names lock the same way, so a lockout does not tell whether an account exists.
    for _ in range(5):
        last = error_of(lambda: broker.call("login", user="nobody", password="wrong-password"))
    assert last.code == "locked"
    assert cli.main(["--config", _config_file(env), "unlock", "bob"]) == 0
    assert broker.call("login", user="bob", password=PASSWORDS["bob"])["user"] == "bob"


def test_lockout_expires(env: LabEnv) -> None:
    store = AuthStore(env.broker_config)
    t0 = time.time()
    for _ in range(5):
        with pytest.raises(Exception, match="invalid|locked|wrong|too many"):
            store.login("bob", "wrong-password", now=t0)
    with pytest.raises(Exception, match="too many failed logins"):
        store.login("bob", PASSWORDS["bob"], now=t0 + 60)
    assert store.login("bob", PASSWORDS["bob"], now=t0 + 15 * 60 + 1).user == "bob"


def test_unknown_user_and_wrong_password_take_the_same_time(env: LabEnv) -> None:
    env.stop_broker()
    env.broker_data["lockout_failures"] = 100  # measure hashing, not lockouts
    env.start_broker()
    broker = env.client()

    def timed(user: str) -> float:
        t = time.perf_counter()
        with pytest.raises(BrokerError):
            broker.call("login", user=user, password="wrong-password")
        return time.perf_counter() - t

    def trimmed_mean(samples: list) -> float:  # without the 2 fastest and 2 slowest (scheduler noise)
        return statistics.mean(sorted(samples)[2:-2])

    timed("alice"), timed("nobody")  # warm up
    # A real difference (no hash for unknown names) is a whole hash time in every attempt; a loaded test machine
    # may spoil one attempt, not three.
    for attempt in range(3):
        wrong, unknown = [], []
        for i in range(12):  # interleaved, so load on the machine hits both alike
            wrong.append(timed("alice"))
            unknown.append(timed(f"nobody{attempt}x{i}"))
        hash_time = statistics.median(wrong)  # one scrypt hash dominates a failed login
        assert hash_time > 0.003
        difference = abs(trimmed_mean(wrong) - trimmed_mean(unknown))
        if difference < 0.25 * hash_time:
            break
    else:
        pytest.fail(f"unknown user vs wrong password differ by {difference:.4f}s (hash {hash_time:.4f}s)")


# -- tickets: the broker derives the user from the ticket only ----------------------------------------------------


def test_a_ticket_of_alice_cannot_act_for_bob(env: LabEnv) -> None:
    broker = env.client()
    alice = env.ticket("alice")
    for op in ("start", "stop", "status", "token"):
        err = error_of(lambda op=op: broker.call(op, ticket=alice, user="bob"))
        assert err.code == "forbidden" and "cannot act for 'bob'" in str(err)
    assert "metalab-bob" not in env.sim.containers()
    started = broker.call("start", ticket=alice)
    assert started["user"] == "alice" and set(env.sim.containers()) == {"metalab-alice"}
    # admin operations check the broker's own admins list, not anything the portal says
    for op, fields in (("admin.list", {}), ("admin.stop", {"target": "alice"}), ("admin.extend", {"target": "alice"})):
        err = error_of(lambda op=op, fields=fields: broker.call(op, ticket=alice, admin=True, duration="1h", **fields))
        assert err.code == "forbidden" and "not a lab admin" in str(err)


def test_forged_expired_foreign_and_missing_tickets_are_refused(env: LabEnv) -> None:
    broker = env.client()
    alice = env.ticket("alice")
    body, mac = alice.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["u"] = "bob"
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    forged = f"{forged_body}.{mac}"
    other_key = TicketSigner(os.urandom(32), 3600).mint("bob", 1)
    key = load_or_create_key(env.broker_config.key)
    expired = TicketSigner(key, 60).mint("bob", 1, now=time.time() - 3600)
    for ticket in (forged, other_key, expired, "garbage", "", None, "a.b.c"):
        err = error_of(lambda ticket=ticket: broker.call("start", ticket=ticket))
        assert err.code == "unauthorized", ticket
    assert env.sim.containers() == {}


def test_logout_and_password_change_end_tickets(env: LabEnv) -> None:
    broker = env.client()
    first, second = env.ticket("alice"), env.ticket("alice")
    broker.call("logout", ticket=first)
    assert error_of(lambda: broker.call("status", ticket=first)).code == "unauthorized"
    assert broker.call("status", ticket=second)["user"] == "alice"
    AuthStore(env.broker_config).set_password("alice", "a-brand-new-password")
    assert error_of(lambda: broker.call("status", ticket=second)).code == "unauthorized"


def test_callers_outside_clients_are_refused(env: LabEnv) -> None:
    env.stop_broker()
    env.broker_data["clients"] = [os.getuid() + 4242]
    env.start_broker()
    err = error_of(lambda: env.client().call("login", user="alice", password=PASSWORDS["alice"]))
    assert err.code == "forbidden" and f"uid {os.getuid()}" in str(err)


def test_bad_requests(env: LabEnv) -> None:
    broker = env.client()
    assert error_of(lambda: broker.call("rm -rf")).code == "bad-request"
    assert error_of(lambda: broker.call("start", ticket=env.ticket("alice"), kind="tpu")).code == "bad-request"
    assert error_of(lambda: broker.call("login", user="alice")).code == "bad-request"


# -- status, start, stop, token, admin ----------------------------------------------------------------------------


def test_status_start_stop_token(env: LabEnv) -> None:
    broker = env.client()
    ticket = env.ticket("alice")
    status = broker.call("status", ticket=ticket)
    assert status["runtime"] is None and set(status["kinds"]) == {"cpu", "gpu"} and status["quota"] is None
    assert broker.call("token", ticket=ticket)["token"] is None
    started = broker.call("start", ticket=ticket, kind="gpu")
    assert started["gpu"] == 0 and started["state"] == "running"
    token = broker.call("token", ticket=ticket)["token"]
    assert token == Path(env.guard["runtime"]["token_dir"], "alice").read_text().strip()
    assert broker.call("status", ticket=ticket)["runtime"]["session"] == started["session"]
    assert broker.call("stop", ticket=ticket)["reason"] == "user"
    assert broker.call("status", ticket=ticket)["runtime"] is None
    bob = broker.call("status", ticket=env.ticket("bob"))
    assert set(bob["kinds"]) == {"cpu"}  # bob may not use GPUs


def test_quota_from_the_quota_file(env: LabEnv) -> None:
    quota = env.tmp / "quota.json"
    quota.write_text(json.dumps({"alice": {"used_bytes": 2 * 1024**3, "limit_bytes": 15 * 1024**3}}))
    env.stop_broker()
    env.broker_data["quota_file"] = str(quota)
    env.start_broker()
    status = env.client().call("status", ticket=env.ticket("alice"))
    assert status["quota"] == {"used_bytes": 2 * 1024**3, "limit_bytes": 15 * 1024**3}
    assert env.client().call("status", ticket=env.ticket("bob"))["quota"] is None


def test_admin_list_extend_stop(env: LabEnv) -> None:
    broker = env.client()
    broker.call("start", ticket=env.ticket("alice"))
    admin = env.ticket("carol")
    listed = broker.call("admin.list", ticket=admin)
    assert [r["user"] for r in listed["runtimes"]] == ["alice"] and listed["gpus_free"] == 2
    extended = broker.call("admin.extend", ticket=admin, target="alice", duration="2h")
    assert extended["extended_seconds"] == 7200
    assert error_of(lambda: broker.call("admin.extend", ticket=admin, target="alice", duration="2x")).code == (
        "bad-request"
    )
    assert broker.call("admin.stop", ticket=admin, target="alice")["reason"] == "admin"
    assert env.sim.containers() == {}
    actors = {e["actor"] for e in env.lab().ledger.events()}
    assert {"portal:alice", "portal-admin:carol"} <= actors


# -- enrollment and the CLI ---------------------------------------------------------------------------------------


def _config_file(env: LabEnv) -> str:
    path = env.tmp / "broker.json"
    path.write_text(json.dumps(env.broker_data))
    return str(path)


def test_enrollment_link_is_single_use_and_expires(env: LabEnv, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config_file(env)
    assert cli.main(["--config", config, "enroll", "bob", "--base-url", "https://lab.test/", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["url"] == f"https://lab.test/enroll/{info['token']}"
    state = Path(env.broker_config.state).read_text()
    assert info["token"] not in state and token_digest(info["token"]) in state
    broker = env.client()
    assert broker.call("enroll.check", token=info["token"])["user"] == "bob"
    short = error_of(lambda: broker.call("enroll.finish", token=info["token"], password="short"))
    assert short.code == "bad-password"
    result = broker.call("enroll.finish", token=info["token"], password="bobs-new-password")
    assert result["user"] == "bob" and broker.call("whoami", ticket=result["ticket"])["user"] == "bob"
    again = error_of(lambda: broker.call("enroll.finish", token=info["token"], password="another-password"))
    assert again.code == "invalid"
    assert broker.call("login", user="bob", password="bobs-new-password")["user"] == "bob"
    store = AuthStore(env.broker_config)
    old = store.create_enrollment("alice", ttl=60, now=time.time() - 120)
    assert error_of(lambda: broker.call("enroll.check", token=old["token"])).code == "invalid"
    assert cli.main(["--config", config, "enroll", "mallory"]) == 2


def test_cli_passwd_from_stdin(env: LabEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    config = _config_file(env)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-password-from-labctl\n"))
    assert cli.main(["--config", config, "passwd", "alice", "--stdin"]) == 0
    assert env.client().call("login", user="alice", password="a-password-from-labctl")["user"] == "alice"
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert cli.main(["--config", config, "passwd", "alice", "--stdin"]) == 2
    assert cli.main(["--config", config, "users", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out.splitlines()[-1])) == {"alice", "bob", "carol"}


def test_serve_runs_as_a_process(env: LabEnv) -> None:
    """``metalab-broker serve`` in its own process: the socket gets the configured mode and answers."""
    env.stop_broker()
    config = _config_file(env)
    proc = subprocess.Popen(
        [
            sys.executable,
            WITH_SIMULATED_PODMAN,
            str(env.state),
            "-m",
            "metalab.host.broker.cli",
            "--config",
            config,
            "serve",
        ],
        env=dict(os.environ, PYTHONPATH=SRC),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(env.broker_data["socket"])
        for _ in range(100):  # bound before its mode is set: wait until it answers
            try:
                result = env.client().call("login", user="alice", password=PASSWORDS["alice"])
                break
            except BrokerError:
                time.sleep(0.05)
        assert result["user"] == "alice"
        assert stat.S_IMODE(os.stat(env.broker_data["socket"]).st_mode) == 0o660
    finally:
        proc.terminate()
        proc.wait(timeout=10)
