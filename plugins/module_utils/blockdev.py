# Copyright: metalab contributors
# Apache-2.0
"""Block device discovery and homes-device selection (pure functions, standard library only).

The modules ``block_facts`` and ``homes_volume`` run the probes (lsblk, sysfs, wipefs/blkid); everything
that interprets their output lives here so it can be unit tested on captured output.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

LSBLK_COLUMNS = "NAME,KNAME,PATH,TYPE,SIZE,MODEL,SERIAL,TRAN,FSTYPE,LABEL,UUID,PTTYPE,MOUNTPOINTS,RO,RM,PKNAME"
# util-linux < 2.37 has no MOUNTPOINTS column (one mount point per device only).
LSBLK_COLUMNS_OLD = LSBLK_COLUMNS.replace("MOUNTPOINTS", "MOUNTPOINT")

# XFS labels are at most 12 characters, so "metalab-homes" would not fit.
DEFAULT_LABEL = "metalab-home"

# Device types that say "something else owns this device".
HOLDER_TYPES = ("lvm", "crypt", "dm", "mpath", "multipath")
MEMBER_FSTYPES = ("LVM2_member", "linux_raid_member", "crypto_LUKS", "zfs_member", "bcache", "ceph_bluestore")


class SelectionError(Exception):
    """The homes device cannot be chosen; the message says why and what to do."""


def _as_bool(value: Any) -> bool:
    # lsblk < 2.33 prints "0"/"1" strings in JSON, newer ones real booleans.
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip() in ("1", "true", "True")


def _as_int(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _as_str(value: Any) -> Optional[str]:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _mountpoints(raw: Dict[str, Any]) -> List[str]:
    points = (raw.get("mountpoints") or []) if "mountpoints" in raw else [raw.get("mountpoint")]
    return [str(p) for p in points if p]


def parse_lsblk(text: str) -> List[Dict[str, Any]]:
    """Parse ``lsblk --json --bytes --output ...`` (tree or ``--list``) into a flat list of device dicts.

    Each dict has normalised keys (name, kname, path, type, size, model, serial, tran, fstype, label, uuid,
    pttype, mountpoints, ro, rm, pkname, children) where ``children`` lists the knames of direct children.
    """
    data = json.loads(text or "{}")
    flat: List[Dict[str, Any]] = []

    def walk(raw: Dict[str, Any], parent: Optional[str]) -> None:
        kname = _as_str(raw.get("kname")) or _as_str(raw.get("name")) or ""
        name = _as_str(raw.get("name")) or kname
        dev = {
            "name": name,
            "kname": kname,
            "path": _as_str(raw.get("path")) or "/dev/" + name,
            "type": _as_str(raw.get("type")) or "",
            "size": _as_int(raw.get("size")),
            "model": _as_str(raw.get("model")),
            "serial": _as_str(raw.get("serial")),
            "tran": _as_str(raw.get("tran")),
            "fstype": _as_str(raw.get("fstype")),
            "label": _as_str(raw.get("label")),
            "uuid": _as_str(raw.get("uuid")),
            "pttype": _as_str(raw.get("pttype")),
            "mountpoints": _mountpoints(raw),
            "ro": _as_bool(raw.get("ro")),
            "rm": _as_bool(raw.get("rm")),
            "pkname": _as_str(raw.get("pkname")) or parent,
            "children": [],
        }
        existing = next((d for d in flat if d["kname"] == kname), None)
        if existing is None:
            flat.append(dev)
        elif dev["pkname"] and dev["pkname"] not in existing.setdefault("parents", []):
            # A device with two parents (md, multipath) appears once per parent in the tree.
            existing["parents"].append(dev["pkname"])
        for child in raw.get("children") or []:
            walk(child, kname)

    for raw in data.get("blockdevices") or []:
        walk(raw, None)
    by_kname = {d["kname"]: d for d in flat}
    for dev in flat:
        for parent in [dev["pkname"], *dev.get("parents", [])]:
            if parent and parent in by_kname and dev["kname"] not in by_kname[parent]["children"]:
                by_kname[parent]["children"].append(dev["kname"])
    for dev in flat:
        dev.pop("parents", None)
    return flat


def lsblk_needs_old_columns(stderr: str) -> bool:
    """True when lsblk refused MOUNTPOINTS (util-linux < 2.37)."""
    return "unknown column" in (stderr or "").lower() and "mountpoints" in (stderr or "").lower()


def parse_wipefs_json(text: str) -> List[Dict[str, Any]]:
    """Parse ``wipefs --no-act --json DEVICE``: a list of {type, offset, uuid, label} signatures."""
    if not (text or "").strip():
        return []
    data = json.loads(text)
    found = []
    for sig in data.get("signatures") or []:
        found.append(
            {
                "type": _as_str(sig.get("type")) or "unknown",
                "offset": _as_str(sig.get("offset")),
                "uuid": _as_str(sig.get("uuid")),
                "label": _as_str(sig.get("label")),
            }
        )
    return found


def parse_blkid_export(text: str) -> List[Dict[str, Any]]:
    """Parse ``blkid -p -o export DEVICE`` (low-level probe): zero or one signature (fs or partition table)."""
    values: Dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    sig_type = values.get("TYPE") or values.get("PTTYPE")
    if not sig_type:
        return []
    return [
        {
            "type": sig_type,
            "offset": None,
            "uuid": values.get("UUID") or values.get("PTUUID"),
            "label": values.get("LABEL"),
        }
    ]


def parse_blkid_values(text: str) -> Dict[str, str]:
    """``blkid -o export DEVICE`` as a dict (UUID, TYPE, LABEL, ...)."""
    values: Dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def is_nvme_namespace(dev: Dict[str, Any]) -> bool:
    return dev.get("type") == "disk" and (dev.get("tran") == "nvme" or str(dev.get("kname", "")).startswith("nvme"))


def build_facts(
    devices: List[Dict[str, Any]],
    sysfs: Optional[Dict[str, Dict[str, Any]]] = None,
    signatures: Optional[Dict[str, List[Dict[str, Any]]]] = None,
    holders: Optional[Dict[str, List[str]]] = None,
    nonzero_data: Optional[Dict[str, bool]] = None,
) -> Dict[str, Any]:
    """Combine lsblk, sysfs and probe results into the facts ``block_facts`` returns.

    ``sysfs``: kname -> {model, serial, nsid}; ``signatures``: kname -> probe result;
    ``holders``: kname -> names in /sys/class/block/<kname>/holders; ``nonzero_data``: kname -> True when
    the first MiB is not all zeroes.  Returns {"disks": [...], "nvme_namespaces": [...]}.
    """
    sysfs = sysfs or {}
    signatures = signatures or {}
    holders = holders or {}
    nonzero_data = nonzero_data or {}
    by_kname = {d["kname"]: d for d in devices}

    def descendants(kname: str) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        for child in by_kname.get(kname, {}).get("children", []):
            if child in by_kname:
                out.append(by_kname[child])
                out.extend(descendants(child))
        return out

    disks = []
    for dev in devices:
        if dev["type"] != "disk":
            continue
        extra = sysfs.get(dev["kname"], {})
        model = dev["model"] or _as_str(extra.get("model"))
        serial = dev["serial"] or _as_str(extra.get("serial"))
        below = descendants(dev["kname"])
        partitions = []
        for part in below:
            if part["type"] != "part" or part["pkname"] != dev["kname"]:
                continue
            partitions.append(
                {
                    "name": part["name"],
                    "path": part["path"],
                    "size": part["size"],
                    "fstype": part["fstype"],
                    "label": part["label"],
                    "uuid": part["uuid"],
                    "mountpoints": part["mountpoints"],
                    "signatures": signatures.get(part["kname"], []),
                }
            )
        own_sigs = signatures.get(dev["kname"], [])
        all_mounts = list(dev["mountpoints"])
        for node in below:
            all_mounts.extend(node["mountpoints"])
        used_by = sorted(
            {n["type"] + ":" + n["name"] for n in below if n["type"] not in ("part",)}
            | {"holder:" + h for h in holders.get(dev["kname"], [])}
        )
        reasons = []
        if dev["pttype"]:
            reasons.append("has a partition table (" + dev["pttype"] + ")")
        if partitions:
            reasons.append("has partitions (" + ", ".join(p["name"] for p in partitions) + ")")
        sig_types = sorted({s["type"] for s in own_sigs if s.get("type")})
        if dev["fstype"] and dev["fstype"] not in sig_types:
            sig_types.append(dev["fstype"])
        if sig_types:
            reasons.append("carries a signature (" + ", ".join(sig_types) + ")")
        if all_mounts:
            reasons.append("is mounted (" + ", ".join(all_mounts) + ")")
        if used_by:
            reasons.append("is in use by " + ", ".join(used_by))
        if nonzero_data.get(dev["kname"]) and not sig_types and not dev["pttype"]:
            reasons.append("holds data (the first MiB is not zeroes)")
        if dev["ro"]:
            reasons.append("is read-only")
        if dev["size"] <= 0:
            reasons.append("has size 0")
        disk = {
            "name": dev["name"],
            "kname": dev["kname"],
            "path": dev["path"],
            "size": dev["size"],
            "model": model,
            "serial": serial,
            "tran": dev["tran"],
            "nvme": is_nvme_namespace(dev),
            "nsid": _as_int(extra.get("nsid")) or None,
            "pttype": dev["pttype"],
            "fstype": dev["fstype"],
            "label": dev["label"],
            "uuid": dev["uuid"],
            "mountpoints": dev["mountpoints"],
            "all_mountpoints": all_mounts,
            "partitions": partitions,
            "signatures": own_sigs,
            "used_by": used_by,
            "ro": dev["ro"],
            "rm": dev["rm"],
            "empty": not reasons,
            "not_empty_reasons": reasons,
        }
        disks.append(disk)
    return {"disks": disks, "nvme_namespaces": [d for d in disks if d["nvme"]]}


def is_metalab_volume(disk: Dict[str, Any], label: str, homes_root: str) -> bool:
    """The filesystem metalab made: our label on the whole device, or mounted at the homes root."""
    if disk.get("label") == label and disk.get("fstype"):
        return True
    if any(s.get("label") == label for s in disk.get("signatures") or []):
        return True
    root = homes_root.rstrip("/") or "/"
    return root in (disk.get("mountpoints") or [])


def _describe(disk: Dict[str, Any]) -> str:
    bits = [disk["path"]]
    if disk.get("model"):
        bits.append(str(disk["model"]))
    if disk.get("serial"):
        bits.append("serial " + str(disk["serial"]))
    bits.append(str(disk.get("size", 0)) + " bytes")
    return ", ".join(bits)


def select_homes_device(
    facts: Dict[str, Any],
    requested: str,
    allow_format: bool = False,
    homes_root: str = "/srv/metalab/homes",
    label: str = DEFAULT_LABEL,
    resolved_path: Optional[str] = None,
) -> Dict[str, Any]:
    """Decide which device holds the homes, and whether it must be formatted.

    ``requested`` is ``auto``, ``none`` or a device path (``resolved_path`` is its realpath, e.g. for
    /dev/disk/by-id links).  Returns {"device": path|None, "action": "format"|"reuse"|"none",
    "wipe": bool, "reason": str, "size": int}.  Raises SelectionError with an actionable message.
    """
    disks: List[Dict[str, Any]] = facts.get("disks") or []
    if requested == "none":
        return {
            "device": None,
            "action": "none",
            "wipe": False,
            "size": 0,
            "reason": "lab_homes_device is none: homes live on the root filesystem",
        }

    if requested == "auto":
        ours = [d for d in disks if is_metalab_volume(d, label, homes_root)]
        if len(ours) > 1:
            raise SelectionError(
                "lab_homes_device: auto found several devices that look like metalab homes volumes ("
                + "; ".join(_describe(d) for d in ours)
                + "); name the one to use in lab_homes_device"
            )
        if ours:
            return {
                "device": ours[0]["path"],
                "action": "reuse",
                "wipe": False,
                "size": ours[0]["size"],
                "reason": "carries the metalab homes filesystem (label " + label + " or mounted at " + homes_root + ")",
            }
        namespaces = facts.get("nvme_namespaces") or [d for d in disks if d.get("nvme")]
        empty = [d for d in namespaces if d.get("empty")]
        if len(empty) == 1:
            return {
                "device": empty[0]["path"],
                "action": "format",
                "wipe": False,
                "size": empty[0]["size"],
                "reason": "the only empty NVMe namespace",
            }
        if not empty:
            if not namespaces:
                listing = "this host has no NVMe namespace"
            else:
                listing = "; ".join(_describe(d) + ": " + ", ".join(d["not_empty_reasons"]) for d in namespaces)
            raise SelectionError(
                "lab_homes_device: auto found no empty NVMe namespace (" + listing + "). Name a device in "
                "lab_homes_device (a device holding data also needs lab_homes_allow_format: true), or set "
                "lab_homes_device: none to keep homes on the root filesystem without quotas"
            )
        raise SelectionError(
            "lab_homes_device: auto found "
            + str(len(empty))
            + " empty NVMe namespaces ("
            + "; ".join(_describe(d) for d in empty)
            + "); name the one to use in lab_homes_device"
        )

    wanted = {requested}
    if resolved_path:
        wanted.add(resolved_path)
    disk = next((d for d in disks if d["path"] in wanted), None)
    if disk is None:
        for candidate in disks:
            part = next((p for p in candidate.get("partitions") or [] if p["path"] in wanted), None)
            if part is not None:
                disk = _partition_as_disk(part, candidate)
                break
    if disk is None:
        raise SelectionError("lab_homes_device: " + requested + " does not exist on this host (no such block device)")
    if is_metalab_volume(disk, label, homes_root):
        return {
            "device": disk["path"],
            "action": "reuse",
            "wipe": False,
            "size": disk["size"],
            "reason": "carries the metalab homes filesystem",
        }
    if disk.get("empty"):
        return {
            "device": disk["path"],
            "action": "format",
            "wipe": False,
            "size": disk["size"],
            "reason": "named in lab_homes_device and empty",
        }
    reasons = list(disk.get("not_empty_reasons") or [])
    blocking = [r for r in reasons if r.startswith(("is mounted", "is in use", "is read-only", "has size 0"))]
    if blocking:
        raise SelectionError(
            "lab_homes_device: "
            + requested
            + " "
            + ", ".join(blocking)
            + "; metalab never formats a device that is mounted or in use, even with lab_homes_allow_format"
        )
    if not allow_format:
        raise SelectionError(
            "lab_homes_device: "
            + requested
            + " "
            + ", ".join(reasons)
            + "; refusing to format it. If its contents may be destroyed, set lab_homes_allow_format: true "
            "for this host"
        )
    return {
        "device": disk["path"],
        "action": "format",
        "wipe": True,
        "size": disk["size"],
        "reason": "named in lab_homes_device with lab_homes_allow_format: true (" + ", ".join(reasons) + ")",
    }


def _partition_as_disk(part: Dict[str, Any], disk: Dict[str, Any]) -> Dict[str, Any]:
    reasons = []
    sig_types = sorted(
        {s["type"] for s in part.get("signatures") or [] if s.get("type")}
        | ({part["fstype"]} if part.get("fstype") else set())
    )
    if sig_types:
        reasons.append("carries a signature (" + ", ".join(sig_types) + ")")
    if part.get("mountpoints"):
        reasons.append("is mounted (" + ", ".join(part["mountpoints"]) + ")")
    return {
        "path": part["path"],
        "size": part["size"],
        "fstype": part.get("fstype"),
        "label": part.get("label"),
        "uuid": part.get("uuid"),
        "mountpoints": part.get("mountpoints") or [],
        "signatures": part.get("signatures") or [],
        "model": disk.get("model"),
        "serial": disk.get("serial"),
        "empty": not reasons,
        "not_empty_reasons": reasons,
    }


def _read(read_file: Callable[[str], Optional[str]], path: str) -> Optional[str]:
    try:
        return read_file(path)
    except OSError:
        return None


def collect(
    run: Callable[[List[str]], Tuple[int, str, str]],
    read_file: Callable[[str], Optional[str]],
    listdir: Callable[[str], List[str]],
    read_head: Optional[Callable[[str], bytes]] = None,
) -> Dict[str, Any]:
    """Run the read-only probes and return build_facts()'s result.

    ``run`` is module.run_command-like (argv list -> rc, out, err); ``read_file``/``listdir`` read sysfs;
    ``read_head`` returns the first MiB of a device (None: skip the data check).  Signatures are probed
    with ``wipefs --no-act --json`` (util-linux >= 2.35), falling back to ``blkid -p -o export``.
    """
    rc, out, err = run(["lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS])
    if rc != 0 and lsblk_needs_old_columns(err):
        rc, out, err = run(["lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS_OLD])
    if rc != 0:
        raise RuntimeError("lsblk failed (rc " + str(rc) + "): " + (err or out).strip())
    devices = parse_lsblk(out)
    sysfs: Dict[str, Dict[str, Any]] = {}
    holders: Dict[str, List[str]] = {}
    signatures: Dict[str, List[Dict[str, Any]]] = {}
    nonzero: Dict[str, bool] = {}
    use_wipefs = True
    for dev in devices:
        kname = dev["kname"]
        if dev["type"] not in ("disk", "part") or dev["size"] <= 0:
            continue
        base = "/sys/class/block/" + kname
        if dev["type"] == "disk":
            info = {}
            for key, path in (
                ("model", base + "/device/model"),
                ("serial", base + "/device/serial"),
                ("nsid", base + "/nsid"),
            ):
                value = _read(read_file, path)
                if value is None and key == "nsid":
                    value = _read(read_file, base + "/device/nsid")
                if value is not None:
                    info[key] = value.strip()
            sysfs[kname] = info
        try:
            found = listdir(base + "/holders")
        except OSError:
            found = []
        if found:
            top = kname if dev["type"] == "disk" else (dev["pkname"] or kname)
            holders.setdefault(top, []).extend(found)
        sigs: Optional[List[Dict[str, Any]]] = None
        if use_wipefs:
            rc, out, err = run(["wipefs", "--no-act", "--json", dev["path"]])
            if rc == 0:
                sigs = parse_wipefs_json(out)
            elif "unrecognized option" in err or "invalid option" in err:
                use_wipefs = False
        if sigs is None:
            rc, out, err = run(["blkid", "-p", "-o", "export", dev["path"]])
            # blkid exits 2 when it finds nothing
            sigs = parse_blkid_export(out) if rc == 0 else []
        signatures[kname] = sigs
        if read_head is not None and dev["type"] == "disk" and not dev["mountpoints"]:
            try:
                head = read_head(dev["path"])
            except OSError:
                head = b""
            nonzero[kname] = any(head)
    return build_facts(devices, sysfs=sysfs, signatures=signatures, holders=holders, nonzero_data=nonzero)


def _read_text(path: str) -> Optional[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _read_head(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(1024 * 1024)


def gather_for_module(module: Any, check_data: bool = True) -> Dict[str, Any]:
    """collect() with an AnsibleModule's run_command and the real sysfs (shared by block_facts, homes_volume)."""

    def run(argv: List[str]) -> Tuple[int, str, str]:
        rc, out, err = module.run_command(argv, environ_update={"LC_ALL": "C"})
        return rc, out, err

    return collect(run, _read_text, os.listdir, _read_head if check_data else None)


def filesystem_size(path: str) -> int:
    """Size in bytes of the filesystem holding path, or its nearest existing parent (nothing is created)."""
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path) or "/"
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize


def selection_or_error(
    facts: Dict[str, Any], requested: str, allow_format: bool, homes_root: str, label: str
) -> Dict[str, Any]:
    """select_homes_device() with /dev/disk/by-* links resolved; errors returned in "error" (None if fine)."""
    resolved = os.path.realpath(requested) if requested.startswith("/") else None
    try:
        result = select_homes_device(
            facts, requested, allow_format=allow_format, homes_root=homes_root, label=label, resolved_path=resolved
        )
        result["error"] = None
    except SelectionError as exc:
        result = {"device": None, "action": None, "wipe": False, "size": 0, "reason": None, "error": str(exc)}
    return result
