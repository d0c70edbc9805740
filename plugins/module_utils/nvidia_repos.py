# Copyright: metalab contributors
# Apache License 2.0 (see LICENSE)
"""Which NVIDIA repositories and packages a lab host gets: pure functions, one answer per platform.

Used by the nvidia_plan module (the nvidia_driver and nvidia_container_toolkit roles read its result) and
unit-tested against exact URLs and package names for every supported platform.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.metalab.lab.plugins.module_utils import rules

CUDA_REPO_BASE_URL = "https://developer.download.nvidia.com/compute/cuda/repos"
TOOLKIT_REPO_BASE_URL = "https://nvidia.github.io/libnvidia-container"

# NVIDIA's name (the CUDA repository's distro path) of each platform metalab supports (rules.PLATFORMS, keyed
# "<distribution>_<major version>"); tests/unit/gpu checks that every supported platform has one.
NVIDIA_IDS = {"Ubuntu_22": "ubuntu2204", "Ubuntu_24": "ubuntu2404", "Debian_12": "debian12", "Amazon_2023": "amzn2023"}

# distro path in the CUDA repository, package family, CUDA signing key file, supported CUDA repo architectures
PLATFORMS: Dict[str, Dict[str, Any]] = {
    "ubuntu2204": {"family": "apt", "cuda_key": "3bf863cc.pub", "arches": ("x86_64", "sbsa"), "codename": "jammy"},
    "ubuntu2404": {"family": "apt", "cuda_key": "3bf863cc.pub", "arches": ("x86_64", "sbsa"), "codename": "noble"},
    "debian12": {"family": "apt", "cuda_key": "3bf863cc.pub", "arches": ("x86_64",), "codename": "bookworm"},
    "amzn2023": {"family": "dnf", "cuda_key": "D42D0685.pub", "arches": ("x86_64", "sbsa"), "codename": None},
}

# Container toolkit pinned per platform. 1.19.x writes CDI specs (v0.7, additionalGids) that podman 4.x cannot
# parse (Ubuntu 24.04 ships 4.9, Debian 12 4.3); 1.18.x writes specs they read. Ubuntu 22.04's podman 3.4 has no
# CDI at all, and AL2023's podman 5 comes from SPAL: they stay on the same tested line until a pairing is tested.
TOOLKIT_VERSIONS = {
    "ubuntu2204": "1.18.0-1",
    "ubuntu2404": "1.18.0-1",
    "debian12": "1.18.0-1",
    "amzn2023": "1.18.0-1",
}
# dnf's versionlock plugin (Amazon Linux 2023: python3-dnf-plugin-versionlock) and its lock list.
DNF_VERSIONLOCK_PLUGIN = "python3-dnf-plugin-versionlock"
DNF_VERSIONLOCK_LIST = "/etc/dnf/plugins/versionlock.list"
TOOLKIT_PACKAGES = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
                    "libnvidia-container1")  # fmt: skip

# The branch each distribution's own archive carries where it cannot be chosen.
DEBIAN12_DRIVER_BRANCH = "535"
# GA kernel series per Ubuntu release: a newer generic kernel is the HWE one, whose modules have their own meta.
UBUNTU_GA_KERNEL = {"ubuntu2204": "5.15", "ubuntu2404": "6.8"}

SOURCES = ("cuda", "distribution")
FLAVORS = ("open", "proprietary")


class UnsupportedPlatform(ValueError):
    """The host's distribution, version or architecture is not one metalab installs NVIDIA software on."""


def platform_id(distribution: str, version: str, architecture: str) -> Dict[str, str]:
    """Map Ansible facts (ansible_distribution, ansible_distribution_version, ansible_architecture) to a platform."""
    distribution, version = distribution.strip(), str(version).strip()
    major = version.split(".")[0]
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "sbsa", "arm64": "sbsa"}.get(architecture.strip())
    problem = rules.platform_problem(distribution, major, version)
    if problem:
        raise UnsupportedPlatform(problem)
    ident = NVIDIA_IDS.get(f"{distribution}_{major}")
    # NVIDIA publishes Ubuntu repositories for the LTS releases only (22.04, not 22.10).
    if ident is None or (distribution == "Ubuntu" and version != f"{major}.04"):
        raise UnsupportedPlatform(
            f"{distribution} {version} is not supported for NVIDIA GPUs; supported: {rules.PLATFORMS_HELP}"
        )
    if arch is None or arch not in PLATFORMS[ident]["arches"]:
        raise UnsupportedPlatform(
            f"architecture {architecture} is not supported on {ident}; supported: "
            + ", ".join(PLATFORMS[ident]["arches"])
        )
    return {
        "id": ident,
        "family": PLATFORMS[ident]["family"],
        "arch": arch,
        "deb_arch": "amd64" if arch == "x86_64" else "arm64",
        "rpm_arch": "x86_64" if arch == "x86_64" else "aarch64",
    }


def cuda_repo(platform: Dict[str, str], base_url: str = CUDA_REPO_BASE_URL) -> Dict[str, Any]:
    """The CUDA repository (where the driver comes from with nvidia_driver_source: cuda)."""
    url = f"{base_url.rstrip('/')}/{platform['id']}/{platform['arch']}"
    key = PLATFORMS[platform["id"]]["cuda_key"]
    repo: Dict[str, Any] = {"name": "nvidia-cuda", "url": url + "/", "key_url": f"{url}/{key}"}
    if platform["family"] == "apt":
        repo.update({"uris": url + "/", "suites": "/", "keyring": "/etc/apt/keyrings/nvidia-cuda.asc"})
    else:
        repo.update({"baseurl": url + "/", "gpgkey": f"{url}/{key}"})
    return repo


def ubuntu_kernel_flavour(platform_ident: str, kernel_release: str) -> str:
    """The linux-modules-nvidia meta-package suffix for a running Ubuntu kernel ('generic', 'generic-hwe-22.04')."""
    match = re.match(r"^(\d+\.\d+)\.\d+-\d+-([a-z0-9-]+)$", kernel_release.strip())
    if not match:
        raise UnsupportedPlatform(f"cannot tell the Ubuntu kernel flavour from kernel release {kernel_release!r}")
    series, flavour = match.groups()
    if flavour == "generic" and series != UBUNTU_GA_KERNEL[platform_ident]:
        release = platform_ident[len("ubuntu") :]
        flavour = f"generic-hwe-{release[:2]}.{release[2:]}"
    return flavour


def driver_plan(
    platform: Dict[str, str],
    source: str = "cuda",
    branch: str = "580",
    flavor: str = "open",
    kernel_release: str = "",
) -> Dict[str, Any]:
    """Packages that install the driver, and how: module stream, prerequisites, DKMS or precompiled, notes."""
    if source not in SOURCES:
        raise ValueError(f"nvidia_driver_source must be one of {', '.join(SOURCES)}, not {source!r}")
    if flavor not in FLAVORS:
        raise ValueError(f"nvidia_driver_flavor must be one of {', '.join(FLAVORS)}, not {flavor!r}")
    if not re.match(r"^\d{3}$", str(branch)):
        raise ValueError(f"nvidia_driver_branch must be a driver branch such as 570 or 580, not {branch!r}")
    ident = platform["id"]
    is_open = flavor == "open"
    plan: Dict[str, Any] = {
        "source": source,
        "branch": str(branch),
        "flavor": flavor,
        "packages": [],
        "prerequisites": [],
        "module_stream": None,
        "dkms": True,
        "branch_pinned": True,
        "notes": [],
    }
    if source == "cuda" and platform["family"] == "apt":
        plan["packages"] = [f"nvidia-open-{branch}" if is_open else f"cuda-drivers-{branch}"]
        plan["prerequisites"] = [f"linux-headers-{kernel_release}"] if kernel_release else []
    elif source == "cuda":
        plan["module_stream"] = f"nvidia-driver:{branch}-{'open' if is_open else 'dkms'}"
        plan["packages"] = [f"@{plan['module_stream']}/default"]
        plan["prerequisites"] = _al2023_kernel_packages(kernel_release)
    elif ident.startswith("ubuntu"):
        # Canonical's signed, precompiled modules: nothing is built on the host.
        suffix = "-server-open" if is_open else "-server"
        flavour = ubuntu_kernel_flavour(ident, kernel_release)
        plan["packages"] = [
            f"linux-modules-nvidia-{branch}{suffix}-{flavour}",
            f"nvidia-headless-no-dkms-{branch}{suffix}",
            f"nvidia-utils-{branch}-server",
        ]
        plan["dkms"] = False
    elif ident == "debian12":
        plan["packages"] = [
            "nvidia-open-kernel-dkms" if is_open else "nvidia-kernel-dkms",
            "nvidia-driver",
            "firmware-misc-nonfree",
        ]
        plan["prerequisites"] = [f"linux-headers-{platform['deb_arch']}"]
        plan["branch"] = DEBIAN12_DRIVER_BRANCH
        plan["branch_pinned"] = False
        if str(branch) != DEBIAN12_DRIVER_BRANCH:
            plan["notes"].append(
                f"Debian 12 non-free carries driver branch {DEBIAN12_DRIVER_BRANCH}, not {branch}: "
                "use nvidia_driver_source: cuda for another branch"
            )
    else:  # amzn2023: Amazon's NVIDIA repository, enabled by the nvidia-release package
        plan["prerequisites"] = ["nvidia-release", *_al2023_kernel_packages(kernel_release)]
        plan["packages"] = ["nvidia-open"] if is_open else ["nvidia-driver", "kmod-nvidia-latest-dkms"]
        plan["branch_pinned"] = False
        plan["notes"].append(
            "Amazon Linux 2023's NVIDIA repository follows its own branch: nvidia_driver_branch is not applied"
        )
    return plan


def _al2023_kernel_packages(kernel_release: str) -> List[str]:
    if not kernel_release:
        return ["dkms", "kernel-devel", "kernel-modules-extra"]
    return ["dkms", f"kernel-devel-{kernel_release}", f"kernel-modules-extra-{kernel_release}"]


def apt_driver_pin(branch: str) -> str:
    """apt preferences body that holds the CUDA repository's driver packages on one branch."""
    packages = (
        r"/^(nvidia-(open|driver|kernel|dkms|modprobe|persistenced|settings|xconfig|compute-utils|utils|firmware)"
        r"|cuda-drivers|libnvidia-(cfg|compute|decode|encode|fbc|gl|nscq|ptxjitcompiler|allocator|egl-gbm|gpucomp)"
        r"|libcuda1|libxnvctrl0|xserver-xorg-video-nvidia)/"
    )
    return f"Package: {packages}\nPin: version {branch}.*\nPin-Priority: 1001\n"


def toolkit_repo(
    platform: Dict[str, str], base_url: str = TOOLKIT_REPO_BASE_URL, channel: str = "stable"
) -> Dict[str, Any]:
    """The NVIDIA container toolkit repository (libnvidia-container)."""
    base = base_url.rstrip("/")
    repo: Dict[str, Any] = {"name": "nvidia-container-toolkit", "key_url": f"{base}/gpgkey"}
    if platform["family"] == "apt":
        url = f"{base}/{channel}/deb/{platform['deb_arch']}/"
        repo.update(
            {"url": url, "uris": url, "suites": "/", "keyring": "/etc/apt/keyrings/nvidia-container-toolkit.asc"}
        )
    else:
        url = f"{base}/{channel}/rpm/{platform['rpm_arch']}"
        repo.update({"url": url, "baseurl": url, "gpgkey": f"{base}/gpgkey"})
    return repo


def toolkit_packages(platform: Dict[str, str], version: Optional[str] = None) -> Dict[str, Any]:
    """The toolkit packages, each pinned to one version (the platform's tested pin unless given)."""
    pinned = version or TOOLKIT_VERSIONS[platform["id"]]
    if not re.match(r"^\d+\.\d+\.\d+(~rc\.\d+)?-\d+$", pinned):
        raise ValueError(f"toolkit version must look like 1.18.0-1, not {pinned!r}")
    sep = "=" if platform["family"] == "apt" else "-"
    warnings = []
    if platform["id"] in ("ubuntu2404", "debian12") and not pinned.startswith("1.18."):
        warnings.append(
            f"toolkit {pinned} on {platform['id']}: only 1.18.x is tested with this platform's podman 4.x "
            "(1.19.x writes CDI specs podman 4 cannot parse)"
        )
    return {
        "version": pinned,
        "packages": [f"{name}{sep}{pinned}" for name in TOOLKIT_PACKAGES],
        "names": list(TOOLKIT_PACKAGES),
        # apt holds them with preferences (templates/etc/apt/preferences.d); dnf with its versionlock plugin.
        "versionlock": dnf_versionlock(TOOLKIT_PACKAGES, pinned) if platform["family"] == "dnf" else [],
        "versionlock_plugin": DNF_VERSIONLOCK_PLUGIN if platform["family"] == "dnf" else None,
        "versionlock_list": DNF_VERSIONLOCK_LIST if platform["family"] == "dnf" else None,
        "warnings": warnings,
    }


def dnf_versionlock(names: Sequence[str], version: str, epoch: int = 0) -> List[Dict[str, str]]:
    """Lines of dnf's versionlock list that hold each package on one version (any architecture), in the form
    `dnf versionlock add` writes (NAME-EPOCH:VERSION-RELEASE.*), with the pattern that finds an older lock of the
    same package (replaced, never added to): a `dnf upgrade` then leaves the packages where the plan put them."""
    if not re.match(r"^\d+\.\d+\.\d+(~rc\.\d+)?-\d+$", version):
        raise ValueError(f"version must look like 1.18.0-1, not {version!r}")
    return [
        {"name": name, "line": f"{name}-{epoch}:{version}.*", "regexp": f"^{re.escape(name)}-[0-9]+:"} for name in names
    ]


def render_plan(
    distribution: str,
    version: str,
    architecture: str,
    kernel_release: str = "",
    source: str = "cuda",
    branch: str = "580",
    flavor: str = "open",
    cuda_repo_base_url: str = CUDA_REPO_BASE_URL,
    toolkit_repo_base_url: str = TOOLKIT_REPO_BASE_URL,
    toolkit_version: Optional[str] = None,
    toolkit_channel: str = "stable",
) -> Dict[str, Any]:
    """Everything the two roles install on one host."""
    platform = platform_id(distribution, version, architecture)
    driver = driver_plan(platform, source, branch, flavor, kernel_release)
    return {
        "platform": platform,
        "cuda_repo": cuda_repo(platform, cuda_repo_base_url) if source == "cuda" else None,
        "driver": driver,
        "apt_driver_pin": apt_driver_pin(driver["branch"])
        if platform["family"] == "apt" and source == "cuda"
        else None,
        "toolkit_repo": toolkit_repo(platform, toolkit_repo_base_url, toolkit_channel),
        "toolkit": toolkit_packages(platform, toolkit_version),
    }
