"""`nft -c` of a rendered ruleset (test support): make test installs nftables and runs as root, so there a missing
requirement fails (METALAB_REQUIRE_ALL=1); elsewhere the check is skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def nft_check(text: str, tmp_path: Path) -> None:
    if shutil.which("nft") is None or os.geteuid() != 0:
        if os.environ.get("METALAB_REQUIRE_ALL") == "1":
            pytest.fail("nft -c needs nft (Debian package nftables) and root")
        pytest.skip("nft -c needs nft and root")
    rules = tmp_path / "firewall.nft"
    rules.write_text(text)
    done = subprocess.run(["nft", "-c", "-f", str(rules)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
