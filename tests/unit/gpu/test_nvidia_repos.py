"""nvidia_repos: exact repositories and packages per platform."""

from __future__ import annotations

import re

import pytest
from ansible_collections.metalab.lab.plugins.module_utils import nvidia_repos as repos

CUDA = "https://developer.download.nvidia.com/compute/cuda/repos"
NCT = "https://nvidia.github.io/libnvidia-container"

PLATFORMS = [
    # distribution, version, arch, id, family
    ("Ubuntu", "22.04", "x86_64", "ubuntu2204", "apt"),
    ("Ubuntu", "24.04", "x86_64", "ubuntu2404", "apt"),
    ("Debian", "12", "x86_64", "debian12", "apt"),
    ("Debian", "12.8", "x86_64", "debian12", "apt"),
    ("Amazon", "2023", "x86_64", "amzn2023", "dnf"),
    ("Amazon", "2023.6.20241212", "x86_64", "amzn2023", "dnf"),
    ("Ubuntu", "24.04", "aarch64", "ubuntu2404", "apt"),
]


@pytest.mark.parametrize(("dist", "version", "arch", "ident", "family"), PLATFORMS)
def test_platform_id(dist, version, arch, ident, family):
    platform = repos.platform_id(dist, version, arch)
    assert (platform["id"], platform["family"]) == (ident, family)


@pytest.mark.parametrize(
    ("dist", "version", "arch", "message"),
    [
        ("Amazon", "2", "x86_64", "Amazon Linux 2 is past its end of support"),
        ("Ubuntu", "20.04", "x86_64", "Ubuntu 20.04 is not supported"),
        ("CentOS", "7", "x86_64", "CentOS 7 is not supported"),
        ("Debian", "11", "x86_64", "Debian 11 is not supported"),
        ("Debian", "12", "aarch64", "architecture aarch64 is not supported on debian12"),
        ("Ubuntu", "22.04", "ppc64le", "architecture ppc64le is not supported"),
    ],
)
def test_unsupported_platforms_refused_by_name(dist, version, arch, message):
    with pytest.raises(repos.UnsupportedPlatform, match=message):
        repos.platform_id(dist, version, arch)


@pytest.mark.parametrize(
    ("dist", "version", "arch", "expected"),
    [
        (
            "Ubuntu",
            "22.04",
            "x86_64",
            {
                "name": "nvidia-cuda",
                "url": f"{CUDA}/ubuntu2204/x86_64/",
                "key_url": f"{CUDA}/ubuntu2204/x86_64/3bf863cc.pub",
                "uris": f"{CUDA}/ubuntu2204/x86_64/",
                "suites": "/",
                "keyring": "/etc/apt/keyrings/nvidia-cuda.asc",
            },
        ),
        (
            "Ubuntu",
            "24.04",
            "aarch64",
            {
                "name": "nvidia-cuda",
                "url": f"{CUDA}/ubuntu2404/sbsa/",
                "key_url": f"{CUDA}/ubuntu2404/sbsa/3bf863cc.pub",
                "uris": f"{CUDA}/ubuntu2404/sbsa/",
                "suites": "/",
                "keyring": "/etc/apt/keyrings/nvidia-cuda.asc",
            },
        ),
        (
            "Debian",
            "12",
            "x86_64",
            {
                "name": "nvidia-cuda",
                "url": f"{CUDA}/debian12/x86_64/",
                "key_url": f"{CUDA}/debian12/x86_64/3bf863cc.pub",
                "uris": f"{CUDA}/debian12/x86_64/",
                "suites": "/",
                "keyring": "/etc/apt/keyrings/nvidia-cuda.asc",
            },
        ),
        (
            "Amazon",
            "2023",
            "x86_64",
            {
                "name": "nvidia-cuda",
                "url": f"{CUDA}/amzn2023/x86_64/",
                "key_url": f"{CUDA}/amzn2023/x86_64/D42D0685.pub",
                "baseurl": f"{CUDA}/amzn2023/x86_64/",
                "gpgkey": f"{CUDA}/amzn2023/x86_64/D42D0685.pub",
            },
        ),
    ],
)
def test_cuda_repo(dist, version, arch, expected):
    assert repos.cuda_repo(repos.platform_id(dist, version, arch)) == expected


def test_cuda_repo_mirror():
    platform = repos.platform_id("Ubuntu", "24.04", "x86_64")
    repo = repos.cuda_repo(platform, "https://mirror.lab.example/cuda/")
    assert repo["uris"] == "https://mirror.lab.example/cuda/ubuntu2404/x86_64/"
    assert repo["key_url"] == "https://mirror.lab.example/cuda/ubuntu2404/x86_64/3bf863cc.pub"


@pytest.mark.parametrize(
    ("dist", "version", "source", "flavor", "kernel", "packages", "prerequisites", "stream", "dkms"),
    [
        ("Ubuntu", "22.04", "cuda", "open", "5.15.0-119-generic", ["nvidia-open-570"],
         ["linux-headers-5.15.0-119-generic"], None, True),
        ("Ubuntu", "24.04", "cuda", "proprietary", "6.8.0-51-generic", ["cuda-drivers-570"],
         ["linux-headers-6.8.0-51-generic"], None, True),
        ("Debian", "12", "cuda", "open", "6.1.0-28-amd64", ["nvidia-open-570"],
         ["linux-headers-6.1.0-28-amd64"], None, True),
        ("Amazon", "2023", "cuda", "open", "6.1.119-129.201.amzn2023.x86_64",
         ["@nvidia-driver:570-open/default"],
         ["dkms", "kernel-devel-6.1.119-129.201.amzn2023.x86_64",
          "kernel-modules-extra-6.1.119-129.201.amzn2023.x86_64"], "nvidia-driver:570-open", True),
        ("Amazon", "2023", "cuda", "proprietary", "", ["@nvidia-driver:570-dkms/default"],
         ["dkms", "kernel-devel", "kernel-modules-extra"], "nvidia-driver:570-dkms", True),
        ("Ubuntu", "22.04", "distribution", "open", "5.15.0-119-generic",
         ["linux-modules-nvidia-570-server-open-generic", "nvidia-headless-no-dkms-570-server-open",
          "nvidia-utils-570-server"], [], None, False),
        ("Ubuntu", "22.04", "distribution", "proprietary", "6.8.0-51-generic",
         ["linux-modules-nvidia-570-server-generic-hwe-22.04", "nvidia-headless-no-dkms-570-server",
          "nvidia-utils-570-server"], [], None, False),
        ("Ubuntu", "24.04", "distribution", "open", "6.8.0-1021-aws",
         ["linux-modules-nvidia-570-server-open-aws", "nvidia-headless-no-dkms-570-server-open",
          "nvidia-utils-570-server"], [], None, False),
        ("Debian", "12", "distribution", "proprietary", "6.1.0-28-amd64",
         ["nvidia-kernel-dkms", "nvidia-driver", "firmware-misc-nonfree"], ["linux-headers-amd64"], None, True),
        ("Debian", "12", "distribution", "open", "6.1.0-28-amd64",
         ["nvidia-open-kernel-dkms", "nvidia-driver", "firmware-misc-nonfree"], ["linux-headers-amd64"], None, True),
        ("Amazon", "2023", "distribution", "open", "6.1.119-129.201.amzn2023.x86_64", ["nvidia-open"],
         ["nvidia-release", "dkms", "kernel-devel-6.1.119-129.201.amzn2023.x86_64",
          "kernel-modules-extra-6.1.119-129.201.amzn2023.x86_64"], None, True),
        ("Amazon", "2023", "distribution", "proprietary", "", ["nvidia-driver", "kmod-nvidia-latest-dkms"],
         ["nvidia-release", "dkms", "kernel-devel", "kernel-modules-extra"], None, True),
    ],
)  # fmt: skip
def test_driver_plan(dist, version, source, flavor, kernel, packages, prerequisites, stream, dkms):
    platform = repos.platform_id(dist, version, "x86_64")
    plan = repos.driver_plan(platform, source, "570", flavor, kernel)
    assert plan["packages"] == packages
    assert plan["prerequisites"] == prerequisites
    assert plan["module_stream"] == stream
    assert plan["dkms"] is dkms


def test_debian_distribution_branch_is_debians():
    plan = repos.driver_plan(repos.platform_id("Debian", "12", "x86_64"), "distribution", "580", "open", "")
    assert plan["branch"] == "535" and plan["branch_pinned"] is False
    assert "Debian 12 non-free carries driver branch 535, not 580" in plan["notes"][0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "runfile"}, "nvidia_driver_source must be one of cuda, distribution"),
        ({"flavor": "closed"}, "nvidia_driver_flavor must be one of open, proprietary"),
        ({"branch": "latest"}, "nvidia_driver_branch must be a driver branch"),
    ],
)
def test_driver_plan_refuses_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        repos.driver_plan(repos.platform_id("Ubuntu", "24.04", "x86_64"), **kwargs)


@pytest.mark.parametrize(
    ("ident", "kernel", "flavour"),
    [
        ("ubuntu2204", "5.15.0-119-generic", "generic"),
        ("ubuntu2204", "6.8.0-51-generic", "generic-hwe-22.04"),
        ("ubuntu2404", "6.8.0-51-generic", "generic"),
        ("ubuntu2404", "6.11.0-19-generic", "generic-hwe-24.04"),
        ("ubuntu2404", "6.8.0-1021-aws", "aws"),
        ("ubuntu2204", "5.15.0-1070-nvidia", "nvidia"),
    ],
)
def test_ubuntu_kernel_flavour(ident, kernel, flavour):
    assert repos.ubuntu_kernel_flavour(ident, kernel) == flavour


def test_ubuntu_kernel_flavour_needs_a_kernel():
    with pytest.raises(repos.UnsupportedPlatform, match="cannot tell the Ubuntu kernel flavour"):
        repos.ubuntu_kernel_flavour("ubuntu2404", "")


def test_apt_driver_pin():
    pin = repos.apt_driver_pin("570")
    assert pin.splitlines()[1:] == ["Pin: version 570.*", "Pin-Priority: 1001"]
    assert "libnvidia-container" not in pin  # the toolkit has its own pin


@pytest.mark.parametrize(
    ("dist", "version", "arch", "expected"),
    [
        ("Ubuntu", "22.04", "x86_64", f"{NCT}/stable/deb/amd64/"),
        ("Ubuntu", "24.04", "x86_64", f"{NCT}/stable/deb/amd64/"),
        ("Ubuntu", "24.04", "aarch64", f"{NCT}/stable/deb/arm64/"),
        ("Debian", "12", "x86_64", f"{NCT}/stable/deb/amd64/"),
        ("Amazon", "2023", "x86_64", f"{NCT}/stable/rpm/x86_64"),
        ("Amazon", "2023", "aarch64", f"{NCT}/stable/rpm/aarch64"),
    ],
)
def test_toolkit_repo(dist, version, arch, expected):
    repo = repos.toolkit_repo(repos.platform_id(dist, version, arch))
    assert repo["url"] == expected
    assert repo["key_url"] == f"{NCT}/gpgkey"


def test_toolkit_repo_mirror_and_dnf_keys():
    repo = repos.toolkit_repo(repos.platform_id("Amazon", "2023", "x86_64"), "https://mirror.example/nct/")
    assert repo == {
        "name": "nvidia-container-toolkit",
        "key_url": "https://mirror.example/nct/gpgkey",
        "url": "https://mirror.example/nct/stable/rpm/x86_64",
        "baseurl": "https://mirror.example/nct/stable/rpm/x86_64",
        "gpgkey": "https://mirror.example/nct/gpgkey",
    }


@pytest.mark.parametrize(
    ("dist", "version", "expected"),
    [
        ("Ubuntu", "22.04", ["nvidia-container-toolkit=1.18.0-1", "nvidia-container-toolkit-base=1.18.0-1",
                             "libnvidia-container-tools=1.18.0-1", "libnvidia-container1=1.18.0-1"]),
        ("Ubuntu", "24.04", ["nvidia-container-toolkit=1.18.0-1", "nvidia-container-toolkit-base=1.18.0-1",
                             "libnvidia-container-tools=1.18.0-1", "libnvidia-container1=1.18.0-1"]),
        ("Debian", "12", ["nvidia-container-toolkit=1.18.0-1", "nvidia-container-toolkit-base=1.18.0-1",
                          "libnvidia-container-tools=1.18.0-1", "libnvidia-container1=1.18.0-1"]),
        ("Amazon", "2023", ["nvidia-container-toolkit-1.18.0-1", "nvidia-container-toolkit-base-1.18.0-1",
                            "libnvidia-container-tools-1.18.0-1", "libnvidia-container1-1.18.0-1"]),
    ],
)  # fmt: skip
def test_toolkit_packages_pinned_per_platform(dist, version, expected):
    result = repos.toolkit_packages(repos.platform_id(dist, version, "x86_64"))
    assert result["packages"] == expected
    assert result["warnings"] == []


def test_toolkit_versionlock_on_dnf_only():
    """dnf keeps the pin through `dnf upgrade` with its versionlock plugin; apt platforms hold it with preferences."""
    dnf = repos.toolkit_packages(repos.platform_id("Amazon", "2023", "x86_64"))
    assert dnf["versionlock_plugin"] == "python3-dnf-plugin-versionlock"
    assert dnf["versionlock_list"] == "/etc/dnf/plugins/versionlock.list"
    assert [lock["line"] for lock in dnf["versionlock"]] == [
        "nvidia-container-toolkit-0:1.18.0-1.*",
        "nvidia-container-toolkit-base-0:1.18.0-1.*",
        "libnvidia-container-tools-0:1.18.0-1.*",
        "libnvidia-container1-0:1.18.0-1.*",
    ]
    apt = repos.toolkit_packages(repos.platform_id("Debian", "12", "x86_64"))
    assert (apt["versionlock"], apt["versionlock_plugin"], apt["versionlock_list"]) == ([], None, None)


def test_versionlock_regexp_replaces_an_older_lock_of_the_same_package_only():
    locks = {lock["name"]: lock for lock in repos.dnf_versionlock(repos.TOOLKIT_PACKAGES, "1.18.1-1")}
    listed = [
        "nvidia-container-toolkit-0:1.17.8-1.*",
        "nvidia-container-toolkit-base-0:1.17.8-1.*",
        "libnvidia-container-tools-0:1.17.8-1.*",
        "libnvidia-container1-0:1.17.8-1.*",
        "kernel-0:6.1.115-126.197.amzn2023.*",
    ]
    for name, lock in locks.items():
        hits = [line for line in listed if re.search(lock["regexp"], line)]
        assert hits == [f"{name}-0:1.17.8-1.*"], (name, hits)
        assert lock["line"] == f"{name}-0:1.18.1-1.*"
    with pytest.raises(ValueError, match="1.18.0-1"):
        repos.dnf_versionlock(["nvidia-container-toolkit"], "1.18")


def test_toolkit_119_on_podman4_platform_warns():
    result = repos.toolkit_packages(repos.platform_id("Ubuntu", "24.04", "x86_64"), "1.19.0-1")
    assert result["packages"][0] == "nvidia-container-toolkit=1.19.0-1"
    assert "podman 4 cannot parse" in result["warnings"][0]


def test_toolkit_version_checked():
    with pytest.raises(ValueError, match="toolkit version must look like 1.18.0-1"):
        repos.toolkit_packages(repos.platform_id("Debian", "12", "x86_64"), "latest")


def test_render_plan_distribution_has_no_cuda_repo():
    plan = repos.render_plan("Ubuntu", "24.04", "x86_64", "6.8.0-51-generic", source="distribution", branch="570")
    assert plan["cuda_repo"] is None and plan["apt_driver_pin"] is None
    assert plan["toolkit"]["version"] == "1.18.0-1"


def test_render_plan_cuda_apt_has_pin():
    plan = repos.render_plan("Debian", "12", "x86_64", "6.1.0-28-amd64", branch="580")
    assert plan["apt_driver_pin"].startswith("Package: ")
    assert "Pin: version 580.*" in plan["apt_driver_pin"]
    assert plan["cuda_repo"]["uris"] == f"{CUDA}/debian12/x86_64/"


def test_render_plan_refuses_amazon_linux_2():
    with pytest.raises(repos.UnsupportedPlatform, match="Amazon Linux 2 "):
        repos.render_plan("Amazon", "2", "x86_64")
