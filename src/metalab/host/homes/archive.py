"""Export a home as a checksummed GNU tar archive; import one into a new home, verified before it takes its place.

export HOME --to D/NAME.tar writes D/NAME.tar, D/NAME.manifest.json and D/NAME.sha256 (both files, checkable with
``sha256sum -c`` in D). An existing archive is never overwritten nor deleted; the tar is renamed into place last, so
leftovers without it (an interrupted export) are removed by the next run.

import FILE --manifest M --into HOME extracts into <parent>/.metalab-move/<name>-<random> (root only, the same
filesystem), re-owns the manifest's owner to the new uid/gid, verifies every entry against the manifest and only
then renames the staging directory onto HOME. On any failure the staging directory is removed and HOME is as it
was; after a kill only the staging directory is left, and the next import of that name removes it first.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
from typing import IO, Any, Dict, List, Mapping, Optional

from metalab.host.homes import tree
from metalab.host.homes.errors import HomesError

STAGING = ".metalab-move"
TAR_COMMON = ["--numeric-owner", "--acls", "--xattrs", "--xattrs-include=*"]
TAR_CREATE = ["tar", "--create", "--format=posix", "--sparse", "--one-file-system", *TAR_COMMON]
TAR_EXTRACT = ["tar", "--extract", "--same-owner", "--same-permissions", *TAR_COMMON]
CHUNK = 1 << 20


def siblings(tar_path: str) -> Dict[str, str]:
    base = tar_path[: -len(".tar")] if tar_path.endswith(".tar") else tar_path
    return {"tar": tar_path, "manifest": base + ".manifest.json", "sha256": base + ".sha256"}


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: str, data: bytes) -> None:
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _run_tar(cmd: List[str], sink: IO[bytes]) -> str:
    """Run tar --create, copying its stdout to ``sink``; the stream's sha256."""
    digest = hashlib.sha256()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    for chunk in iter(lambda: proc.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
        digest.update(chunk)
        sink.write(chunk)
    err = proc.stderr.read().decode("utf-8", "replace")
    if proc.wait() != 0:
        raise HomesError(f"tar failed ({proc.returncode}): {err.strip()[-500:]}")
    return digest.hexdigest()


def export(
    home: str, to: str, manifest_path: Optional[str] = None, stdout: Optional[IO[bytes]] = None
) -> Dict[str, Any]:
    """Archive ``home`` to ``to`` ('-': ``stdout``, and the manifest to ``manifest_path`` when given)."""
    home = tree.check_home_path(home)
    manifest = tree.build(home)
    cmd = [*TAR_CREATE, "-C", home, "--file=-", "."]
    if to == "-":
        if manifest_path:  # a stream's manifest is needed before it: `manifest HOME` first, or this
            manifest_path = tree.check_home_path(manifest_path, "--manifest")
            if os.path.lexists(manifest_path):
                raise HomesError(f"{manifest_path} exists; it is never overwritten", "refused")
            write_new(manifest_path, _dump(manifest))
        sha = _run_tar(cmd, stdout) if stdout is not None else ""
        return {"home": home, "manifest": manifest_path, "archive_sha256": sha, "totals": manifest["totals"]}
    to = tree.check_home_path(to, "--to")
    if not to.endswith(".tar") or manifest_path:
        raise HomesError("--to must name a .tar file (its manifest and sha256 are written beside it)", "bad-input")
    files = siblings(to)
    directory = os.path.dirname(to)
    if not os.path.isdir(directory):
        raise HomesError(f"{directory} is not a directory", "bad-input")
    if os.path.lexists(to):
        raise HomesError(f"{to} exists: an archive is never overwritten nor deleted by metalab", "refused")
    for path in files.values():  # leftovers of an interrupted export (the tar, renamed last, is absent)
        for leftover in (path, path + ".part"):
            if os.path.lexists(leftover):
                os.unlink(leftover)
    with open(files["tar"] + ".part", "xb") as out:
        sha = _run_tar(cmd, out)
        out.flush()
        os.fsync(out.fileno())
    data = _dump(manifest)
    write_new(files["manifest"] + ".part", data)
    names = {k: os.path.basename(v) for k, v in files.items()}
    sums = f"{sha}  {names['tar']}\n{hashlib.sha256(data).hexdigest()}  {names['manifest']}\n"
    write_new(files["sha256"] + ".part", sums.encode())
    for key in ("manifest", "sha256", "tar"):
        os.rename(files[key] + ".part", files[key])
    _fsync_dir(directory)
    return {"home": home, **files, "archive_sha256": sha, "totals": manifest["totals"]}


def _dump(manifest: Dict[str, Any]) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode("utf-8")


def load_manifest(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as src:
            return tree.check_manifest(json.load(src))
    except (OSError, ValueError) as exc:
        raise HomesError(f"cannot read manifest {path}: {exc}", "bad-input") from None


def check_sums(sums_path: str) -> List[str]:
    """Check every line of a sha256sum file (paths relative to its directory); the files it checked."""
    directory = os.path.dirname(sums_path)
    checked = []
    with open(sums_path, encoding="utf-8") as src:
        for line in src:
            want, _, name = line.rstrip("\n").partition("  ")
            path = os.path.join(directory, name)
            if "/" in name or not re.fullmatch(r"[0-9a-f]{64}", want):
                raise HomesError(f"{sums_path}: bad line {line!r}", "bad-input")
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as data:
                    for chunk in iter(lambda: data.read(CHUNK), b""):
                        digest.update(chunk)
            except OSError as exc:
                raise HomesError(f"{path}, listed in {sums_path}: {exc.strerror}") from None
            if digest.hexdigest() != want:
                raise HomesError(f"{path} does not match its checksum in {sums_path}: the archive is damaged")
            checked.append(path)
    return checked


def verify(home: str, manifest: Dict[str, Any], uids: Mapping[int, int], gids: Mapping[int, int]) -> List[str]:
    return tree.compare(manifest, tree.build(tree.check_home_path(home)), uids, gids)


def _reown(root: str, manifest: Dict[str, Any], uids: Mapping[int, int], gids: Mapping[int, int]) -> None:
    """Map owners (and named ACL entries) of the staged tree; keep modes and security.capability chown drops."""
    want = {e["path"]: e for e in manifest["entries"]}
    for rel, dirfd, name, st in tree.walk(root):
        exp = want.get(rel)
        uid, gid = uids.get(st.st_uid, st.st_uid), gids.get(st.st_gid, st.st_gid)
        if (uid, gid) != (st.st_uid, st.st_gid):
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
        if exp is None or stat.S_ISLNK(st.st_mode):
            continue
        now = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        if stat.S_IMODE(now.st_mode) != exp["mode"]:
            os.chmod(name, exp["mode"], dir_fd=dirfd)
        path = tree.proc_path(dirfd, name)
        xattrs = tree.mapped_xattrs(exp.get("xattrs", {}), uids, gids)
        for key in (*tree.ACL_XATTRS, "security.capability"):
            if key in xattrs:
                os.setxattr(path, key, base64.b64decode(xattrs[key]), follow_symlinks=False)


def _stale(stage_root: str, name: str) -> None:
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{16}")
    for entry in os.listdir(stage_root):
        if pattern.fullmatch(entry):
            shutil.rmtree(os.path.join(stage_root, entry))


def _stage_root(parent: str) -> str:
    stage_root = os.path.join(parent, STAGING)
    with contextlib.suppress(FileExistsError):
        os.mkdir(stage_root, 0o700)
    st, pst = os.lstat(stage_root), os.lstat(parent)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_dev != pst.st_dev:
        raise HomesError(f"{stage_root} is not a root-owned directory on the homes' filesystem", "refused")
    os.chmod(stage_root, 0o700)
    return stage_root


def import_home(
    archive: str,
    manifest_path: str,
    home: str,
    uid: int,
    gid: int,
    quota_bytes: Optional[int] = None,
    stdin: Optional[IO[bytes]] = None,
) -> Dict[str, Any]:
    home = tree.check_home_path(home, "--into")
    manifest = load_manifest(tree.check_home_path(manifest_path, "--manifest"))
    if archive != "-":
        archive = tree.check_home_path(archive, "FILE")
        if not os.path.isfile(archive):
            raise HomesError(f"{archive} is not a file", "bad-input")
    if uid < 0 or gid < 0:
        raise HomesError("--uid and --gid must be >= 0", "bad-input")
    parent, name = os.path.split(home)
    if not os.path.isdir(parent):
        raise HomesError(f"{parent} (the parent of {home}) is not a directory", "bad-input")
    uids, gids = {manifest["uid"]: uid}, {manifest["gid"]: gid}
    stage_root = _stage_root(parent)
    lock = os.open(os.path.join(stage_root, name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HomesError(f"another import into {home} is running", "busy") from None
        _stale(stage_root, name)
        if os.path.lexists(home):
            done = _existing(home, manifest, uids, gids)
            if done:
                return done
        need = int(manifest["totals"]["allocated_bytes"])
        if quota_bytes is not None and need > quota_bytes:
            raise HomesError(f"the home needs {need} bytes, more than the quota of {quota_bytes}", "refused")
        vfs = os.statvfs(parent)
        if need > vfs.f_bavail * vfs.f_frsize:
            raise HomesError(f"the home needs {need} bytes, {parent} has {vfs.f_bavail * vfs.f_frsize} free", "refused")
        checked = (
            check_sums(siblings(archive)["sha256"])
            if archive != "-" and os.path.exists(siblings(archive)["sha256"])
            else []
        )
        staging = os.path.join(stage_root, f"{name}-{secrets.token_hex(8)}")
        os.mkdir(staging, 0o700)
        try:
            _extract(archive, staging, stdin)
            _reown(staging, manifest, uids, gids)
            diffs = verify(staging, manifest, uids, gids)
            if diffs:
                raise HomesError(f"the copy does not match the manifest ({len(diffs)} differences)", details=diffs)
            os.sync()
            os.rename(staging, home)
            _fsync_dir(parent)
        except BaseException:
            if os.path.lexists(staging):
                shutil.rmtree(staging)
            raise
    finally:
        os.close(lock)
    return {"home": home, "uid": uid, "gid": gid, "imported": True, "checked": checked, "totals": manifest["totals"]}


def _existing(home: str, manifest: Dict[str, Any], uids: Mapping[int, int], gids: Mapping[int, int]) -> Any:
    """None where ``home`` is an empty directory; the result where it already is this import; else refused."""
    if not os.path.isdir(home) or os.path.islink(home):
        raise HomesError(f"{home} exists and is not a directory", "refused")
    if not os.listdir(home):
        return None
    quick = tree.compare(manifest, tree.build(home, checksums=False), uids, gids)
    if not quick and not verify(home, manifest, uids, gids):
        return {"home": home, "imported": False, "already_imported": True, "totals": manifest["totals"]}
    raise HomesError(f"{home} exists and is not empty", "refused")


def _extract(archive: str, staging: str, stdin: Optional[IO[bytes]]) -> None:
    cmd = [*TAR_EXTRACT, "-C", staging, f"--file={archive}"]
    proc = subprocess.run(cmd, stdin=stdin if archive == "-" else subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        raise HomesError(f"tar failed ({proc.returncode}): {proc.stderr.decode('utf-8', 'replace').strip()[-500:]}")
