"""Mitogen for Ansible (the optional ``mitogen`` extra) converges a lab host the way Ansible's own strategy does.

One nspawn host, mg1: site.yml with tags base,storage,lab_users under Mitogen's linear strategy, then a second
run (ansible-playbook) and a check run (`labctl provision --mitogen --check`) must report changed=0. That each run
really went through Mitogen is read from the host's own sudo log: Ansible's become starts
`sudo ... /bin/sh -c 'echo BECOME-SUCCESS-...'` for every task, Mitogen starts one python bootstrap per run
(`exec(zlib.decompress(binascii.a2b_base64(...` through sudo) and runs every module in it.
About half a minute on the development machine.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import LABCTL, failures, labctl, playbook, recap, ssh, up

from metalab.labctl import runner

NAME = "mg1"
TAGS = "base,storage,lab_users"
LAB_VARS = {
    "lab_homes_device": "none",
    "lab_quota_required": False,
    "runtime_image_base_from_host": True,
    "lab_users": [{"name": "alice", "quota": "1G"}, {"name": "bob", "quota": "1G"}],
}
# The first stage of Mitogen's bootstrap, as sudo logs the command it runs (mitogen/parent.py).
MITOGEN_BOOTSTRAP = "zlib.decompress(binascii.a2b_base64("
ANSIBLE_BECOME = "BECOME-SUCCESS-"


def _mitogen_env() -> dict[str, str]:
    try:
        return runner.mitogen_env()
    except runner.MitogenNotInstalled as exc:
        pytest.fail(f"{exc} (make venv installs it)")


def _without_strategy() -> dict[str, str]:
    """The caller's environment without a strategy set from outside (make MITOGEN=1 exports one)."""
    return {k: v for k, v in os.environ.items() if k not in ("ANSIBLE_STRATEGY", "ANSIBLE_STRATEGY_PLUGINS")}


def _playbook(inventory: Path) -> subprocess.CompletedProcess[str]:
    return playbook("site.yml", inventory, tags=TAGS, environ={**_without_strategy(), **_mitogen_env()})


def _sudo_commands(record: dict, since: float, until: float) -> list[str]:
    """What sudo ran on the host between two moments (the sandbox shares this machine's clock)."""
    log = ssh(record, f"sudo journalctl --no-pager -q -o short-unix _COMM=sudo --since @{int(since)}")
    assert log.returncode == 0, log.stderr
    commands = []
    for line in log.stdout.splitlines():
        stamp, _, text = line.partition(" ")
        if "COMMAND=" in text and "journalctl" not in text and since <= float(stamp) <= until:
            commands.append(text)
    return commands


def _assert_through_mitogen(record: dict, since: float, until: float) -> None:
    commands = _sudo_commands(record, since, until)
    assert any(MITOGEN_BOOTSTRAP in c and "USER=root" in c for c in commands), (
        "no Mitogen bootstrap in the host's sudo log:\n" + "\n".join(commands[-10:])
    )
    per_task = [c for c in commands if ANSIBLE_BECOME in c]
    assert not per_task, f"{len(per_task)} tasks ran through Ansible's own become, e.g. {per_task[0][:200]}"


@pytest.fixture(scope="module")
def lab(state_dir, tmp_path_factory):
    """mg1, converged once under Mitogen; taken down at the end whatever happened."""
    tmp = tmp_path_factory.mktemp("mitogen")
    try:
        record = up(NAME)
        inventory = yaml.safe_load(labctl("inventory", NAME).stdout)
        inventory["all"]["vars"].update(LAB_VARS)
        path = tmp / "hosts.yml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        since = time.time()
        first = _playbook(path)
        until = time.time()
        assert first.returncode == 0, failures(first)
        assert recap(first.stdout)[NAME]["failed"] == 0
        yield {"record": record, "inventory": path, "tmp": tmp, "converged": (since, until)}
    finally:
        labctl("down", NAME, check=False)


def test_converge_went_through_mitogen(lab):
    _assert_through_mitogen(lab["record"], *lab["converged"])
    script = 'for u in alice bob; do sudo stat -c "%U %a" "$(getent passwd lab-$u | cut -d: -f6)"; done'
    homes = ssh(lab["record"], script)
    assert homes.stdout.splitlines() == ["lab-alice 700", "lab-bob 700"], homes.stdout + homes.stderr


def test_second_run_changes_nothing(lab):
    since = time.time()
    result = _playbook(lab["inventory"])
    assert result.returncode == 0, failures(result)
    totals = recap(result.stdout)[NAME]
    assert totals["changed"] == 0 and totals["failed"] == 0, totals
    _assert_through_mitogen(lab["record"], since, time.time())


def test_labctl_check_run_with_mitogen_changes_nothing(lab):
    """`labctl provision --mitogen` switches the strategy itself; --check on the converged host changes nothing."""
    env = {**_without_strategy(), "METALAB_CACHE": str(lab["tmp"] / "cache")}
    env.update(METALAB_CONFIG=str(lab["tmp"] / "no-config.toml"), METALAB_MITOGEN="0")  # the flag must win
    argv = [LABCTL, "provision", "--mitogen", "--check", "--plain", "--tags", TAGS, "-i", str(lab["inventory"])]
    since = time.time()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert result.returncode == 0, failures(result)
    assert "(check mode: nothing changes) with Mitogen" in result.stdout
    assert f"  {NAME} status=ok " in result.stdout and " changed=0 " in result.stdout, result.stdout[-2000:]
    _assert_through_mitogen(lab["record"], since, time.time())
