"""A home's manifest: every entry with its type, mode, owner, checksum, link target, xattrs, hard links, sparseness.

The walk never follows a symbolic link (directories are opened with O_NOFOLLOW relative to their parent's fd, every
entry is lstat'ed), stays on the home's filesystem (a mount point inside the home is refused) and is deterministic
(names sorted by their bytes). Sockets are left out (tar cannot carry them) and listed under ``skipped``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from metalab.host.homes.errors import HomesError

FORMAT = "metalab-home-manifest/1"
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFSOCK: "socket",
}
Walked = Tuple[str, int, str, os.stat_result]  # (relative path, parent dir fd, name, lstat)


def check_home_path(path: str, what: str = "HOME") -> str:
    """An absolute, normalised path that is not / and has no '..': else bad input."""
    if not path or not os.path.isabs(path):
        raise HomesError(f"{what} must be an absolute path: {path!r}", "bad-input")
    if ".." in path.split("/") or os.path.normpath(path) != path.rstrip("/") or path.rstrip("/") == "":
        raise HomesError(f"{what} must be a normalised path without '..' (and not /): {path!r}", "bad-input")
    return path.rstrip("/")


def walk(root: str) -> Iterator[Walked]:
    """``root`` (as '.') and everything under it, depth first, names sorted by bytes, never following a link."""
    parent, name = os.path.split(root)
    pfd = os.open(parent, _DIR_FLAGS)
    try:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise HomesError(f"{root} does not exist", "bad-input") from None
        if not stat.S_ISDIR(st.st_mode):
            raise HomesError(f"{root} is not a directory (symbolic links are not followed)", "bad-input")
        yield from _walk_dir(pfd, name, ".", st, st.st_dev)
    finally:
        os.close(pfd)


def _walk_dir(pfd: int, name: str, rel: str, st: os.stat_result, dev: int) -> Iterator[Walked]:
    yield rel, pfd, name, st
    fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise HomesError(f"{rel} changed while it was read", "failure")
        for child in sorted(os.listdir(fd), key=os.fsencode):
            crel = child if rel == "." else f"{rel}/{child}"
            cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(cst.st_mode):
                if cst.st_dev != dev:
                    raise HomesError(f"{crel} is another filesystem (a mount point): unmount it first", "refused")
                yield from _walk_dir(fd, child, crel, cst, dev)
            else:
                yield crel, fd, child, cst
    finally:
        os.close(fd)


def proc_path(dirfd: int, name: str) -> str:
    """A path to ``name`` in the directory open as ``dirfd`` (its last component is never followed by *xattr)."""
    return f"/proc/self/fd/{dirfd}/{name}"


def read_xattrs(dirfd: int, name: str) -> Dict[str, str]:
    path = proc_path(dirfd, name)
    out: Dict[str, str] = {}
    for key in sorted(os.listxattr(path, follow_symlinks=False)):
        out[key] = base64.b64encode(os.getxattr(path, key, follow_symlinks=False)).decode("ascii")
    return out


def _sha256(dirfd: int, name: str, st: os.stat_result, rel: str) -> str:
    fd = os.open(name, _FILE_FLAGS, dir_fd=dirfd)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise HomesError(f"{rel} changed while it was read", "failure")
        digest = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)
    finally:
        os.close(fd)


def entry(rel: str, dirfd: int, name: str, st: os.stat_result, checksums: bool = True) -> Dict[str, Any]:
    kind = _TYPES[stat.S_IFMT(st.st_mode)]
    out: Dict[str, Any] = {"path": rel, "type": kind, "mode": stat.S_IMODE(st.st_mode)}
    out.update(uid=st.st_uid, gid=st.st_gid, xattrs=read_xattrs(dirfd, name))
    if kind == "file":
        allocated = st.st_blocks * 512
        out.update(size=st.st_size, mtime=int(st.st_mtime), allocated=allocated, sparse=allocated < st.st_size)
        if checksums:
            out["sha256"] = _sha256(dirfd, name, st, rel)
    elif kind == "symlink":
        out["target"] = os.readlink(name, dir_fd=dirfd)
    elif kind in ("char", "block"):
        out["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    return out


def build(root: str, checksums: bool = True) -> Dict[str, Any]:
    """The manifest of the tree at ``root`` (see the module's docstring)."""
    entries: List[Dict[str, Any]] = []
    skipped: List[str] = []
    inodes: Dict[Tuple[int, int], List[str]] = {}
    allocated = files = size = 0
    for rel, dirfd, name, st in walk(root):
        if stat.S_ISSOCK(st.st_mode):
            skipped.append(rel)
            continue
        entries.append(entry(rel, dirfd, name, st, checksums))
        key = (st.st_dev, st.st_ino)
        first = key not in inodes
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            inodes.setdefault(key, []).append(rel)
        if first:
            allocated += st.st_blocks * 512
            if stat.S_ISREG(st.st_mode):
                files, size = files + 1, size + st.st_size
    root_entry = entries[0]
    return {
        "format": FORMAT,
        "home": root,
        "uid": root_entry["uid"],
        "gid": root_entry["gid"],
        "entries": entries,
        "hardlinks": sorted(sorted(paths) for paths in inodes.values() if len(paths) > 1),
        "skipped": skipped,
        "totals": {"entries": len(entries), "files": files, "bytes": size, "allocated_bytes": allocated},
    }


def check_manifest(manifest: Any) -> Dict[str, Any]:
    """A loaded manifest, checked for shape (bad input otherwise)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HomesError(f"not a home manifest (format {FORMAT})", "bad-input")
    entries = manifest.get("entries")
    if not isinstance(entries, list) or not entries or entries[0].get("path") != ".":
        raise HomesError("manifest has no entries or does not start with the home itself", "bad-input")
    for item in entries:
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/"):
            raise HomesError(f"manifest entry with a bad path: {path!r}", "bad-input")
    return manifest


def remap_acl(blob: bytes, uids: Mapping[int, int], gids: Mapping[int, int]) -> bytes:
    """A POSIX ACL xattr (version 2: tag u16, perm u16, id u32 per entry) with named users and groups mapped."""
    if len(blob) < 4 or (len(blob) - 4) % 8 or struct.unpack_from("<I", blob)[0] != 2:
        return blob
    out = bytearray(blob)
    for off in range(4, len(blob), 8):
        tag, _perm, ident = struct.unpack_from("<HHI", blob, off)
        mapped = uids.get(ident, ident) if tag == 0x02 else gids.get(ident, ident) if tag == 0x08 else ident
        struct.pack_into("<I", out, off + 4, mapped)
    return bytes(out)


def mapped_xattrs(xattrs: Mapping[str, str], uids: Mapping[int, int], gids: Mapping[int, int]) -> Dict[str, str]:
    out = dict(xattrs)
    for key in ACL_XATTRS:
        if key in out and (uids or gids):
            blob = remap_acl(base64.b64decode(out[key]), uids, gids)
            out[key] = base64.b64encode(blob).decode("ascii")
    return out


_COMPARED = ("type", "mode", "uid", "gid", "size", "mtime", "sha256", "target", "rdev", "xattrs")


def compare(
    expected: Dict[str, Any],
    actual: Dict[str, Any],
    uids: Optional[Mapping[int, int]] = None,
    gids: Optional[Mapping[int, int]] = None,
) -> List[str]:
    """Every difference between a manifest and a tree's manifest, owners of ``expected`` mapped by uids/gids."""
    uids, gids = dict(uids or {}), dict(gids or {})
    want = {e["path"]: e for e in expected["entries"]}
    have = {e["path"]: e for e in actual["entries"]}
    diffs = [f"missing: {p!r}" for p in want if p not in have]
    diffs += [f"unexpected: {p!r}" for p in have if p not in want]
    for path, exp in want.items():
        got = have.get(path)
        if got is None:
            continue
        exp = dict(exp, uid=uids.get(exp["uid"], exp["uid"]), gid=gids.get(exp["gid"], exp["gid"]))
        exp["xattrs"] = mapped_xattrs(exp.get("xattrs", {}), uids, gids)
        for key in _COMPARED:
            if key in exp and key in got and exp[key] != got[key]:
                diffs.append(f"{path!r}: {key} is {_show(key, got[key])}, expected {_show(key, exp[key])}")
        if exp.get("sparse") and got.get("type") == "file" and not got.get("sparse"):
            diffs.append(f"{path!r}: no longer sparse ({got['allocated']} bytes allocated of {got['size']})")
    if sorted(expected.get("hardlinks", [])) != sorted(actual.get("hardlinks", [])):
        diffs.append(f"hard links are {actual.get('hardlinks')}, expected {expected.get('hardlinks')}")
    return diffs


def _show(key: str, value: Any) -> str:
    return oct(value) if key == "mode" else repr(value)
