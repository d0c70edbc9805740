"""metalab.lab.platform_problem / platform_vars_files: the platform check and platform variables every role gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.metalab.lab.plugins.filter.platform import (
    FilterModule,
    platform_problem,
    platform_vars_files,
    podman_cdi_problem,
)
from ansible_collections.metalab.lab.plugins.module_utils import rules

ROOT = Path(__file__).resolve().parents[3]
SUPPORTED = [(dist, major) for dist, majors in rules.PLATFORMS.items() for major in majors]


def facts(distribution: str, major: str, version: str = "") -> dict:
    return {
        "distribution": distribution,
        "distribution_major_version": major,
        "distribution_version": version or major,
    }


@pytest.mark.parametrize(("dist", "major"), SUPPORTED)
def test_supported_platforms_have_no_problem(dist, major):
    assert platform_problem(facts(dist, major)) == ""


@pytest.mark.parametrize(
    ("dist", "major", "version", "message"),
    [
        # The messages the base role printed before the check moved to metalab.lab.common.
        (
            "Debian",
            "11",
            "11.9",
            "Debian 11.9 is not supported by metalab; supported: Ubuntu 22.04/24.04, Debian 12, Amazon Linux 2023",
        ),
        (
            "Ubuntu",
            "20",
            "20.04",
            "Ubuntu 20.04 is not supported by metalab; supported: Ubuntu 22.04/24.04, Debian 12, Amazon Linux 2023",
        ),
        (
            "Amazon",
            "2",
            "2",
            "Amazon Linux 2 is past its end of support and its Python is too old for current ansible-core; "
            "use Amazon Linux 2023",
        ),
        (
            "CentOS",
            "9",
            "9",
            "CentOS 9 is not supported by metalab; supported: Ubuntu 22.04/24.04, Debian 12, Amazon Linux 2023",
        ),
    ],
)
def test_unsupported_platforms_are_refused_with_the_reason(dist, major, version, message):
    assert platform_problem(facts(dist, major, version)) == message


@pytest.mark.parametrize("bad", [None, "Debian", {}, {"distribution_major_version": "12"}])
def test_anything_but_facts_is_an_error_that_says_what_is_expected(bad):
    with pytest.raises(AnsibleFilterError, match="ansible_facts"):
        platform_problem(bad)


def test_filters_are_registered_under_their_names():
    assert FilterModule().filters() == {
        "platform_problem": platform_problem,
        "platform_vars_files": platform_vars_files,
        "podman_cdi_problem": podman_cdi_problem,
    }


def write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n")


def test_vars_files_of_every_role_general_before_specific(tmp_path):
    for name in ("b/vars/Debian_12.yml", "b/vars/Debian.yml", "a/vars/Debian.yml", "a/vars/Ubuntu.yml",
                 "c/vars/Debian_11.yml", "c/vars/main.yml", "c/tasks/Debian.yml"):  # fmt: skip
        write(tmp_path / name)
    found = platform_vars_files(str(tmp_path), facts("Debian", "12"))
    assert [str(Path(f).relative_to(tmp_path)) for f in found] == [
        "a/vars/Debian.yml",
        "b/vars/Debian.yml",
        "b/vars/Debian_12.yml",
    ]


def test_a_distribution_name_is_never_a_pattern(tmp_path):
    write(tmp_path / "a/vars/Debian.yml")
    assert platform_vars_files(str(tmp_path), facts("*", "12")) == []
    assert platform_vars_files(str(tmp_path), facts("Deb[i]an", "12")) == []


ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "main.yml").is_file())


def test_every_platform_vars_file_of_the_collection_names_a_supported_platform():
    # A misspelt or stale file (Debain.yml, Amazon_2.yml) would silently never load.
    names = {d for d, _ in SUPPORTED} | {f"{d}_{m}" for d, m in SUPPORTED}
    files = sorted((ROOT / "roles").glob("*/vars/*.yml"))
    assert files
    stray = [str(f.relative_to(ROOT)) for f in files if f.stem != "main" and f.stem not in names]
    assert stray == []


@pytest.mark.parametrize("role", [r for r in ROLES if r != "common"])
def test_every_role_depends_on_common(role):
    meta = yaml.safe_load((ROOT / "roles" / role / "meta" / "main.yml").read_text())
    deps = [d["role"] if isinstance(d, dict) else d for d in meta.get("dependencies") or []]
    assert "metalab.lab.common" in deps, f"{role} would run without the platform check and platform variables"
