from __future__ import annotations

import pytest

from metalab.host.guard.config import ConfigError, parse_config

from .conftest import H, base_config


def test_defaults(tmp_path):
    data = base_config(tmp_path)
    data.pop("ledger")
    data.pop("lock")
    data["runtime"] = {"env": {}}
    cfg = parse_config(data)
    assert cfg.ledger == "/var/lib/metalab/ledger.sqlite"
    assert cfg.runtime.network == "slirp4netns"
    assert cfg.runtime.command == ["supervisord", "-n", "-c", "/etc/supervisor/supervisord.conf"]
    assert cfg.runtime.socket_root == "/run/metalab/sockets"
    assert cfg.runtime.token_dir == "/etc/metalab/tokens"
    assert cfg.runtime.resource_limits is True and cfg.runtime.gpus == [] and cfg.runtime.gpu_groups == []


def test_user_overrides_reach_the_user_policy(tmp_path):
    data = base_config(tmp_path)
    data["users"]["alice"]["limits"] = {"gpu": "2h"}
    cfg = parse_config(data)
    assert cfg.users["alice"].policy.limit("gpu") == 2 * H
    assert cfg.users["bob"].policy.limit("gpu") == 4 * H


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["users"]["bob"].update(uid=2001), "also the uid of alice"),
        (lambda d: d["users"]["bob"].update(uid=0), r"users.bob.uid: .*never root"),
        (lambda d: d["users"].update({"Bad Name": {}}), "invalid user name"),
        (lambda d: d["users"]["bob"].update(limits={"cpu": "1fortnight"}), r"users.bob: .*invalid duration"),
        (lambda d: d["runtime"].update(gpus=[0, 0]), "duplicate GPU"),
        (lambda d: d["runtime"].update(gpus=["0"]), "GPU indexes"),
        (lambda d: d["runtime"].update(gpu_groups=[0]), r"runtime.gpu_groups: .*never root"),
        (lambda d: d["runtime"].update(gpu_groups=["990"]), r"runtime.gpu_groups: .*group ids"),
        (lambda d: d["runtime"].update(gpu_groups=[True]), r"runtime.gpu_groups: .*group ids"),
        (lambda d: d["runtime"].update(gpu_groups=990), r"runtime.gpu_groups: .*group ids"),
        (lambda d: d["runtime"].update(engine="docker"), "unknown engine"),
        (lambda d: d["runtime"].update(env={"A": "x\ny"}), "one-line"),
        (lambda d: d["runtime"].update(socket_root="relative"), "absolute path"),
    ],
)
def test_invalid_config_names_the_entry(tmp_path, mutate, match):
    data = base_config(tmp_path)
    mutate(data)
    with pytest.raises(ConfigError, match=match):
        parse_config(data)
