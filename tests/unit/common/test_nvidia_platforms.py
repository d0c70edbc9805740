"""nvidia_repos takes the supported platforms from metalab's rules module and adds only NVIDIA's names for them."""

from __future__ import annotations

import pytest
from ansible_collections.metalab.lab.plugins.module_utils import nvidia_repos as repos
from ansible_collections.metalab.lab.plugins.module_utils import rules

SUPPORTED = [(dist, major) for dist, majors in rules.PLATFORMS.items() for major in majors]


@pytest.mark.parametrize(("dist", "major"), SUPPORTED)
def test_every_supported_platform_has_an_nvidia_repository(dist, major):
    version = f"{major}.04" if dist == "Ubuntu" else major
    platform = repos.platform_id(dist, version, "x86_64")
    assert platform["id"] == repos.NVIDIA_IDS[f"{dist}_{major}"]
    assert platform["id"] in repos.PLATFORMS and platform["id"] in repos.TOOLKIT_VERSIONS


def test_nvidia_names_only_supported_platforms():
    assert sorted(repos.NVIDIA_IDS) == sorted(f"{d}_{m}" for d, m in SUPPORTED)


@pytest.mark.parametrize(("dist", "version"), [("Amazon", "2"), ("Debian", "11.9"), ("Rocky", "9.4")])
def test_unsupported_platforms_are_refused_with_the_rules_message(dist, version):
    with pytest.raises(repos.UnsupportedPlatform) as refused:
        repos.platform_id(dist, version, "x86_64")
    assert str(refused.value) == rules.platform_problem(dist, version.split(".")[0], version)


def test_an_ubuntu_interim_release_has_no_nvidia_repository():
    # metalab accepts Ubuntu 22 by major version; NVIDIA publishes repositories for the LTS release only.
    with pytest.raises(repos.UnsupportedPlatform, match="Ubuntu 22.10 is not supported for NVIDIA GPUs"):
        repos.platform_id("Ubuntu", "22.10", "x86_64")
