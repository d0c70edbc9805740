# Copyright: metalab contributors
# Apache License 2.0 (see LICENSE)
"""NVIDIA GPU discovery and health evaluation: pure parsing functions.

Everything here runs on the lab host's system Python (>= 3.9, standard library only) and is
unit-tested without a GPU: sysfs is read below an injectable root, command output is passed in
as text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import Any, Dict, List, Optional

NVIDIA_VENDOR_ID = "0x10de"
# PCI base class + subclass: 0x0300 VGA compatible controller, 0x0302 3D controller (datacenter GPUs).
# NVIDIA's other functions (0x0403 HD audio, 0x0680 NVSwitch bridge, 0x0c03 USB-C) are not GPUs.
GPU_PCI_CLASSES = ("0x0300", "0x0302")

# A few well-known device ids, only as a hint when the driver is not installed (nvidia-smi gives the real name).
DEVICE_ID_HINTS = {
    "0x1db1": "Tesla V100-SXM2-16GB",
    "0x1eb8": "Tesla T4",
    "0x20b0": "NVIDIA A100-SXM4-40GB",
    "0x20b2": "NVIDIA A100-SXM4-80GB",
    "0x20b5": "NVIDIA A100 80GB PCIe",
    "0x20f1": "NVIDIA A100-PCIE-40GB",
    "0x2237": "NVIDIA A10G",
    "0x26b9": "NVIDIA L40S",
    "0x27b8": "NVIDIA L4",
    "0x2330": "NVIDIA H100 80GB HBM3",
    "0x2331": "NVIDIA H100 PCIe",
}

# Fields asked of `nvidia-smi --query-gpu`, in this order. All exist since driver 450.
SMI_QUERY_FIELDS = (
    "index",
    "pci.bus_id",
    "name",
    "uuid",
    "memory.total",
    "driver_version",
    "persistence_mode",
    "mig.mode.current",
    "mig.mode.pending",
    "ecc.mode.current",
    "ecc.errors.uncorrected.volatile.total",
    "temperature.gpu",
    "compute_mode",
)

# Placeholders nvidia-smi prints instead of a value.
_SMI_NO_VALUE = re.compile(
    r"^\[?(N/A|Not Supported|Unknown Error|Insufficient Permissions|GPU requires reset)\]?$", re.I
)

MISMATCH_MARKER = "Driver/library version mismatch"
NO_DRIVER_MARKER = "couldn't communicate with the NVIDIA driver"
NO_DEVICES_MARKER = "No devices were found"


def smi_query_argv(nvidia_smi: str = "nvidia-smi") -> List[str]:
    """The argv that produces what parse_smi_query() reads."""
    return [nvidia_smi, "--query-gpu=" + ",".join(SMI_QUERY_FIELDS), "--format=csv,noheader,nounits"]


def normalize_pci_address(address: str) -> str:
    """nvidia-smi '00000000:3B:00.0' and sysfs '0000:3b:00.0' -> '0000:3b:00.0'."""
    address = address.strip().lower()
    match = re.match(r"^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$", address)
    if not match:
        raise ValueError(f"not a PCI address: {address!r}")
    domain = int(match.group(1) or "0", 16)
    return f"{domain:04x}:{int(match.group(2), 16):02x}:{int(match.group(3), 16):02x}.{match.group(4)}"


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def read_pci_gpus(sysfs_root: str = "/sys") -> List[Dict[str, Any]]:
    """NVIDIA GPUs on the PCI bus, from sysfs alone (works before any driver is installed)."""
    devices_dir = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        names = sorted(os.listdir(devices_dir))
    except OSError:
        return []
    gpus = []
    for name in names:
        base = os.path.join(devices_dir, name)
        vendor = (_read(os.path.join(base, "vendor")) or "").lower()
        pci_class = (_read(os.path.join(base, "class")) or "").lower()
        if vendor != NVIDIA_VENDOR_ID or pci_class[:6] not in GPU_PCI_CLASSES:
            continue
        device_id = (_read(os.path.join(base, "device")) or "").lower() or None
        numa_raw = _read(os.path.join(base, "numa_node"))
        numa_node = int(numa_raw) if numa_raw and numa_raw.lstrip("-").isdigit() else None
        driver_link = os.path.join(base, "driver")
        driver = os.path.basename(os.readlink(driver_link)) if os.path.islink(driver_link) else None
        gpus.append(
            {
                "pci_address": normalize_pci_address(name),
                "vendor_id": vendor,
                "device_id": device_id,
                "pci_class": pci_class[:6],
                "model_hint": DEVICE_ID_HINTS.get(device_id or ""),
                # -1 means "no NUMA affinity reported" (single-socket hosts, many VMs).
                "numa_node": numa_node if numa_node is not None and numa_node >= 0 else None,
                "kernel_driver": driver,
            }
        )
    return gpus


def _smi_value(raw: str) -> Optional[str]:
    value = raw.strip()
    if not value or _SMI_NO_VALUE.match(value):
        return None
    return value


def _smi_int(raw: str) -> Optional[int]:
    value = _smi_value(raw)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _smi_mode(raw: str) -> Optional[str]:
    value = _smi_value(raw)
    return value.lower() if value is not None else None


def parse_smi_query(text: str) -> List[Dict[str, Any]]:
    """Parse `nvidia-smi --query-gpu=<SMI_QUERY_FIELDS> --format=csv,noheader,nounits`."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(SMI_QUERY_FIELDS):
            raise ValueError(f"nvidia-smi row has {len(row)} fields, expected {len(SMI_QUERY_FIELDS)}: {row!r}")
        field = dict(zip(SMI_QUERY_FIELDS, row))
        persistence = _smi_mode(field["persistence_mode"])
        bus_id = _smi_value(field["pci.bus_id"])
        gpus.append(
            {
                "index": _smi_int(field["index"]),
                "pci_address": normalize_pci_address(bus_id) if bus_id else None,
                "name": _smi_value(field["name"]),
                "uuid": _smi_value(field["uuid"]),
                "memory_total_mib": _smi_int(field["memory.total"]),
                "driver_version": _smi_value(field["driver_version"]),
                "persistence_mode": None if persistence is None else persistence == "enabled",
                "mig_mode": _smi_mode(field["mig.mode.current"]),
                "mig_mode_pending": _smi_mode(field["mig.mode.pending"]),
                "ecc_mode": _smi_mode(field["ecc.mode.current"]),
                "ecc_errors_uncorrected": _smi_int(field["ecc.errors.uncorrected.volatile.total"]),
                "temperature_c": _smi_int(field["temperature.gpu"]),
                "compute_mode": _smi_value(field["compute_mode"]),
            }
        )
    return gpus


def parse_smi_header(text: str) -> Dict[str, Optional[str]]:
    """Driver and CUDA version from `nvidia-smi -q` (or the default table, which has the same labels)."""
    driver = re.search(r"Driver Version\s*:\s*([0-9][0-9.]*)", text)
    cuda = re.search(r"CUDA Version\s*:\s*([0-9][0-9.]*)", text)
    return {"driver_version": driver.group(1) if driver else None, "cuda_version": cuda.group(1) if cuda else None}


def parse_smi_list(text: str) -> Dict[int, List[Dict[str, Any]]]:
    """MIG devices per GPU index from `nvidia-smi -L`."""
    migs: Dict[int, List[Dict[str, Any]]] = {}
    current: Optional[int] = None
    for line in text.splitlines():
        gpu = re.match(r"^GPU (\d+): .*\(UUID: (GPU-[0-9a-fA-F-]+)\)", line)
        if gpu:
            current = int(gpu.group(1))
            migs.setdefault(current, [])
            continue
        mig = re.match(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[0-9a-fA-F-]+)\)", line)
        if mig and current is not None:
            migs[current].append({"profile": mig.group(1), "index": int(mig.group(2)), "uuid": mig.group(3)})
    return migs


def parse_kernel_module_version(text: Optional[str]) -> Dict[str, Optional[str]]:
    """Loaded kernel module version and flavour from /proc/driver/nvidia/version."""
    if not text:
        return {"version": None, "flavor": None}
    match = re.search(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+([0-9]+\.[0-9.]+)", text)
    flavor = "open" if "Open Kernel Module" in text else "proprietary"
    return {"version": match.group(1) if match else None, "flavor": flavor if match else None}


def classify_smi_failure(rc: int, stdout: str, stderr: str) -> Dict[str, Optional[str]]:
    """What a failed nvidia-smi run means: mismatch (reboot pending), no_driver, no_devices or error."""
    text = f"{stdout}\n{stderr}"
    library = re.search(r"NVML library version:\s*([0-9.]+)", text)
    if MISMATCH_MARKER.lower() in text.lower():
        state = "mismatch"
    elif NO_DRIVER_MARKER in text:
        state = "no_driver"
    elif NO_DEVICES_MARKER in text:
        state = "no_devices"
    else:
        state = "error"
    message = " ".join(line.strip() for line in text.splitlines() if line.strip()) or f"nvidia-smi exited {rc}"
    return {"state": state, "library_version": library.group(1) if library else None, "message": message}


def build_gpu_facts(
    pci_gpus: List[Dict[str, Any]],
    smi_installed: bool,
    smi_gpus: Optional[List[Dict[str, Any]]] = None,
    smi_header: Optional[Dict[str, Optional[str]]] = None,
    smi_failure: Optional[Dict[str, Optional[str]]] = None,
    mig_devices: Optional[Dict[int, List[Dict[str, Any]]]] = None,
    kernel_module: Optional[Dict[str, Optional[str]]] = None,
) -> Dict[str, Any]:
    """Merge sysfs and nvidia-smi views into the facts gpu_facts returns."""
    smi_gpus = smi_gpus or []
    by_address = {gpu["pci_address"]: gpu for gpu in smi_gpus if gpu.get("pci_address")}
    mig_devices = mig_devices or {}
    kernel_module = kernel_module or {"version": None, "flavor": None}
    gpus = []
    for pci in pci_gpus:
        seen = by_address.pop(pci["pci_address"], None)
        gpu = dict(pci)
        gpu.update({key: None for key in _SMI_KEYS})
        gpu["driver_visible"] = seen is not None
        gpu["mig_devices"] = []
        if seen is not None:
            gpu.update({key: seen[key] for key in _SMI_KEYS})
            gpu["mig_devices"] = mig_devices.get(seen["index"], []) if seen["index"] is not None else []
        gpus.append(gpu)
    for seen in by_address.values():  # seen by the driver but not in sysfs (a sysfs view that is incomplete)
        gpu = {"pci_address": seen["pci_address"], "vendor_id": NVIDIA_VENDOR_ID, "device_id": None}
        gpu.update({"pci_class": None, "model_hint": None, "numa_node": None, "kernel_driver": None})
        gpu.update({key: seen[key] for key in _SMI_KEYS})
        gpu["driver_visible"] = True
        gpu["mig_devices"] = mig_devices.get(seen["index"], []) if seen["index"] is not None else []
        gpus.append(gpu)

    header = smi_header or {}
    if not smi_installed:
        nvml_state = "not_installed"
    elif smi_failure is not None:
        nvml_state = smi_failure["state"] or "error"
    else:
        nvml_state = "ok"
    version = header.get("driver_version") or next((g["driver_version"] for g in smi_gpus if g["driver_version"]), None)
    reboot_required = nvml_state == "mismatch"
    if kernel_module.get("version") and version and kernel_module["version"] != version:
        reboot_required = True
    driver = {
        "installed": smi_installed,
        "loaded": kernel_module.get("version") is not None,
        "version": version,
        "kernel_module_version": kernel_module.get("version"),
        "kernel_module_flavor": kernel_module.get("flavor"),
        "cuda_version": header.get("cuda_version"),
        "nvml_state": nvml_state,
        "nvml_library_version": (smi_failure or {}).get("library_version"),
        "reboot_required": reboot_required,
        "message": (smi_failure or {}).get("message"),
    }
    return {
        "metalab_gpus": gpus,
        "metalab_gpu_present": bool(gpus),
        "metalab_gpu_count": len(pci_gpus),
        "metalab_gpu_driver": driver,
    }


_SMI_KEYS = (
    "index",
    "name",
    "uuid",
    "memory_total_mib",
    "driver_version",
    "persistence_mode",
    "mig_mode",
    "mig_mode_pending",
    "ecc_mode",
    "ecc_errors_uncorrected",
    "temperature_c",
    "compute_mode",
)


# --- CDI --------------------------------------------------------------------------------------------------------


def parse_cdi_spec(text: str) -> Dict[str, Any]:
    """cdiVersion, kind and device names of a CDI spec written by `nvidia-ctk cdi generate`.

    The host has no YAML library guaranteed, and nvidia-ctk writes a fixed layout; JSON specs are read as JSON.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        data = json.loads(stripped)
        return {
            "cdi_version": data.get("cdiVersion"),
            "kind": data.get("kind"),
            "devices": [str(device.get("name")) for device in data.get("devices", [])],
        }
    version = re.search(r"^cdiVersion:\s*['\"]?([^'\"\s]+)", text, re.M)
    kind = re.search(r"^kind:\s*['\"]?([^'\"\s]+)", text, re.M)
    devices = []
    in_devices = False
    for line in text.splitlines():
        if re.match(r"^[A-Za-z]", line):  # a top-level key starts or ends the devices list
            in_devices = line.startswith("devices:")
            continue
        if not in_devices:
            continue
        # A device's name sits at the first mapping level of a list item: "- name: x" or "  name: x".
        name = re.match(r"^(?:- |  )name:\s*['\"]?([^'\"]+?)['\"]?\s*$", line)
        if name:
            devices.append(name.group(1))
    return {
        "cdi_version": version.group(1) if version else None,
        "kind": kind.group(1) if kind else None,
        "devices": devices,
    }


def expected_cdi_devices(gpus: List[Dict[str, Any]]) -> List[str]:
    """Device names nvidia-ctk generates for these GPUs (index and uuid strategies, plus MIG and 'all')."""
    names = set()
    for gpu in gpus:
        if gpu.get("index") is None:
            continue
        if gpu.get("mig_mode") == "enabled" and gpu.get("mig_devices"):
            for mig in gpu["mig_devices"]:
                names.add(f"{gpu['index']}:{mig['index']}")
                names.add(mig["uuid"])
        else:
            names.add(str(gpu["index"]))
            if gpu.get("uuid"):
                names.add(gpu["uuid"])
    if names:
        names.add("all")
    return sorted(names)


# --- health -----------------------------------------------------------------------------------------------------


def evaluate_health(
    facts: Dict[str, Any],
    cdi_spec: Optional[Dict[str, Any]] = None,
    cdi_state: Optional[Dict[str, Any]] = None,
    require_cdi: bool = True,
    require_persistence: bool = True,
) -> Dict[str, Any]:
    """Judge a GPU host from gpu facts, the parsed CDI spec and the toolkit role's state file.

    Returns ok, problems (each a sentence that says what to do) and warnings, plus the numbers behind them.
    """
    gpus = facts.get("metalab_gpus", [])
    driver = facts.get("metalab_gpu_driver", {})
    problems: List[str] = []
    warnings: List[str] = []
    on_bus = [gpu for gpu in gpus if gpu.get("pci_class")]
    visible = [gpu for gpu in gpus if gpu.get("driver_visible")]

    if not gpus:
        return {
            "ok": True,
            "gpu_host": False,
            "problems": [],
            "warnings": [],
            "summary": "no NVIDIA GPU on the PCI bus: nothing to check",
            "gpus_on_bus": 0,
            "gpus_visible": 0,
            "reboot_required": False,
            "cdi": {"present": False, "current": None, "missing": [], "unexpected": []},
        }

    state = driver.get("nvml_state")
    if driver.get("reboot_required"):
        problems.append(
            "driver/library version mismatch: a new driver is installed but the old kernel module is loaded; "
            "reboot the host (lab_reboot_ok: true lets the nvidia_driver role do it)"
        )
    if state == "not_installed":
        problems.append("NVIDIA driver not installed (no nvidia-smi): run the nvidia_driver role")
    elif state == "no_driver":
        problems.append("nvidia-smi cannot reach the kernel driver (module not loaded): check dmesg, then reboot")
    elif state in ("error", "no_devices"):
        problems.append(f"nvidia-smi failed: {driver.get('message')}")

    if state == "ok" and len(visible) < len(on_bus):
        missing = [gpu["pci_address"] for gpu in on_bus if not gpu.get("driver_visible")]
        problems.append(
            f"{len(on_bus)} GPU(s) on the PCI bus but the driver sees {len(visible)}: missing "
            + ", ".join(missing)
            + " (fallen off the bus, bound to another driver or disabled: check dmesg for Xid errors)"
        )
    for gpu in on_bus:
        bound = gpu.get("kernel_driver")
        if state != "not_installed" and bound not in (None, "nvidia"):
            problems.append(f"GPU {gpu['pci_address']} is bound to {bound}, not nvidia")
    if require_persistence:
        off = [str(gpu["index"]) for gpu in visible if gpu.get("persistence_mode") is False]
        if off:
            problems.append(f"persistence mode off on GPU {', '.join(off)}: enable nvidia-persistenced")
    for gpu in visible:
        if gpu.get("ecc_errors_uncorrected"):
            warnings.append(f"GPU {gpu['index']} reports {gpu['ecc_errors_uncorrected']} uncorrected ECC errors")
        if gpu.get("mig_mode_pending") and gpu.get("mig_mode") and gpu["mig_mode_pending"] != gpu["mig_mode"]:
            warnings.append(
                f"GPU {gpu['index']} MIG mode change pending ({gpu['mig_mode']} -> {gpu['mig_mode_pending']})"
            )

    cdi: Dict[str, Any] = {"present": cdi_spec is not None, "current": None, "missing": [], "unexpected": []}
    if cdi_spec is None:
        if require_cdi:
            problems.append("CDI spec /etc/cdi/nvidia.yaml missing: run the nvidia_container_toolkit role")
    elif state == "ok":
        expected = set(expected_cdi_devices(visible))
        listed = set(cdi_spec.get("devices", []))
        # Specs generated with only the index strategy carry no UUID names: compare what the spec chose to list.
        if not any(name.startswith(("GPU-", "MIG-")) for name in listed):
            expected = {name for name in expected if not name.startswith(("GPU-", "MIG-"))}
        cdi["missing"] = sorted(expected - listed)
        cdi["unexpected"] = sorted(listed - expected)
        recorded = (cdi_state or {}).get("driver_version")
        stale_driver = recorded is not None and recorded != driver.get("version")
        cdi["current"] = not cdi["missing"] and not cdi["unexpected"] and not stale_driver
        if cdi["missing"] or cdi["unexpected"]:
            problems.append(
                "CDI spec does not list the GPUs the driver sees (missing: "
                + (", ".join(cdi["missing"]) or "none")
                + "; unexpected: "
                + (", ".join(cdi["unexpected"]) or "none")
                + "): rerun the nvidia_container_toolkit role"
            )
        if stale_driver:
            problems.append(
                f"CDI spec was generated for driver {recorded}, driver is now {driver.get('version')}: "
                "rerun the nvidia_container_toolkit role"
            )

    ok = not problems
    summary = f"{len(on_bus)} GPU(s) on the bus, {len(visible)} seen by driver {driver.get('version') or '-'}"
    return {
        "ok": ok,
        "gpu_host": True,
        "problems": problems,
        "warnings": warnings,
        "summary": summary + (": healthy" if ok else f": {len(problems)} problem(s)"),
        "gpus_on_bus": len(on_bus),
        "gpus_visible": len(visible),
        "reboot_required": bool(driver.get("reboot_required")),
        "cdi": cdi,
    }


# --- collection (the only part that runs commands; callables injected so tests need no host) -------------------


def collect_gpu_facts(
    run_command: Any,
    nvidia_smi: Optional[str],
    sysfs_root: str = "/sys",
    proc_root: str = "/proc",
) -> Dict[str, Any]:
    """Gather sysfs, /proc and nvidia-smi views. run_command(argv) -> (rc, stdout, stderr); read-only."""
    pci_gpus = read_pci_gpus(sysfs_root)
    kernel_module = parse_kernel_module_version(_read(os.path.join(proc_root, "driver", "nvidia", "version")))
    if not nvidia_smi:
        return build_gpu_facts(pci_gpus, smi_installed=False, kernel_module=kernel_module)
    rc, out, err = run_command(smi_query_argv(nvidia_smi))
    if rc != 0:
        failure = classify_smi_failure(rc, out, err)
        return build_gpu_facts(pci_gpus, smi_installed=True, smi_failure=failure, kernel_module=kernel_module)
    smi_gpus = parse_smi_query(out)
    # The -q header carries the CUDA version; "-d COMPUTE" keeps the rest of the report short.
    rc, out, _err = run_command([nvidia_smi, "-q", "-d", "COMPUTE"])
    header: Dict[str, Optional[str]] = {"driver_version": None, "cuda_version": None}
    if rc == 0:
        header = parse_smi_header(out)
    mig_devices: Dict[int, List[Dict[str, Any]]] = {}
    if any(gpu["mig_mode"] == "enabled" for gpu in smi_gpus):
        rc, out, _err = run_command([nvidia_smi, "-L"])
        mig_devices = parse_smi_list(out) if rc == 0 else {}
    return build_gpu_facts(
        pci_gpus,
        smi_installed=True,
        smi_gpus=smi_gpus,
        smi_header=header,
        mig_devices=mig_devices,
        kernel_module=kernel_module,
    )
