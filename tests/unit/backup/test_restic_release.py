"""The restic release the backup role installs where the distribution has no package (Amazon Linux 2023)."""

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "backup"


def _release(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    if "argument_specs" in data:
        return data["argument_specs"]["main"]["options"]["backup_restic_release"]["default"]
    return data["backup_restic_release"]


def test_the_release_is_pinned_by_checksum_for_each_architecture_the_role_maps():
    release = _release(ROLE / "defaults" / "main.yml")
    assert set(release["sha256"]) == {"amd64", "arm64"}, "vars/main.yml maps x86_64 and aarch64 to these"
    for arch, digest in release["sha256"].items():
        assert re.fullmatch(r"[0-9a-f]{64}", digest), (arch, digest)
    url = release["url"].replace("{version}", release["version"]).replace("{arch}", "amd64")
    assert (
        url
        == f"https://github.com/restic/restic/releases/download/v{release['version']}/restic_{release['version']}_linux_amd64.bz2"
    )


def test_the_documented_default_is_the_default():
    assert _release(ROLE / "meta" / "argument_specs.yml") == _release(ROLE / "defaults" / "main.yml")
