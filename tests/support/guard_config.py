"""A guard configuration under a temporary directory, for the guard's and the portal's unit tests (test support)."""

from __future__ import annotations

import grp
import os
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple


def guard_config(tmp: Path, users: Sequence[Tuple[str, bool]], first_uid: int) -> Dict[str, Any]:
    """guard.json's data with every path under ``tmp``: ``users`` are (name, gpu), uids from ``first_uid``, each
    with a home; two GPUs; nothing of the machine's own (/etc/metalab, /run/metalab) is named."""
    entries = {}
    for i, (name, gpu) in enumerate(users):
        home = tmp / "home" / name
        home.mkdir(parents=True)
        entries[name] = {"uid": first_uid + i, "gid": first_uid + i, "home": str(home), "gpu": gpu}
    return {
        "ledger": str(tmp / "state" / "ledger.sqlite"),
        "lock": str(tmp / "run" / "guard.lock"),
        "host": "lab1",
        "log_file": str(tmp / "guard.log"),
        "lock_timeout": 5,
        "users": entries,
        "policy": {"limits": {"cpu": "12h", "gpu": "4h"}},
        "runtime": {
            "socket_root": str(tmp / "sockets"),
            "frontdoor_group": grp.getgrgid(os.getgid()).gr_name,
            "token_dir": str(tmp / "tokens"),
            "env_dir": str(tmp / "envdir"),
            "gpus": [0, 1],
        },
    }
