"""Restores that never overwrite.

A user's restore: restic restores into a fresh directory under <homes_root>/.metalab-restore/ (root only, on the
homes filesystem, excluded from backups), then the restored home is renamed into <home>/restored/<stamp>-<short_id>/.
She controls her home, so nothing there is reached by path as root: her home and restored/ are opened with
O_NOFOLLOW (a planted symlink is refused, never followed), the dated folder is first made empty by us with mkdir
(a taken name gets a suffix) and the staged tree is renamed over that empty folder (rename never replaces a non-empty
directory, a file or a link). Nothing is written in the home before the quota check passed and restic finished.

A whole-host restore stages the snapshot's homes the same way and renames each onto an absent or empty home.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from metalab.host.backup import catalog, state
from metalab.host.backup.config import Config
from metalab.host.backup.errors import BackupError
from metalab.host.backup.restic import Restic

SKIP_HOMES = ("lost+found", ".metalab-restore")


def relative_path(path: Optional[str]) -> str:
    """A path inside her home as given by her or an admin: relative, no '..'; '' means the whole home."""
    if path is None:
        return ""
    text = str(path)
    if "\0" in text or "\n" in text:
        raise BackupError("--path must not contain NUL or newline characters", "bad-input")
    if text.startswith("/"):
        raise BackupError(f"--path {text!r} must be relative to the home (e.g. notebooks/run1)", "bad-input")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BackupError(f"--path {text!r} must not contain '..'", "bad-input")
    return "/".join(parts)


def _escape(path: str) -> str:
    """restic --include takes a pattern: escape its wildcards so that a path is matched literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in path)


def _ls(restic: Restic, snapshot_id: str, target: str) -> Tuple[int, int, List[Dict[str, Any]]]:
    """(files, bytes, nodes) of ``target`` and everything under it in the snapshot."""
    nodes = [
        n for n in restic.json_lines(["ls", "--json", "--recursive", snapshot_id, target])
        if isinstance(n, dict) and n.get("struct_type") == "node"
        and (n.get("path") == target or str(n.get("path", "")).startswith(target.rstrip("/") + "/"))
    ]  # fmt: skip
    files = [n for n in nodes if n.get("type") == "file"]
    return len(files), sum(int(n.get("size") or 0) for n in files), nodes


def usage_bytes(home: str) -> int:
    """Bytes her home uses on disk (symlinks are not followed)."""
    total = 0
    for top, dirs, files in os.walk(home):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def _as_root() -> bool:
    return os.geteuid() == 0


def _staging(cfg: Config, device: int) -> str:
    root = cfg.staging_root
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or (_as_root() and (st.st_uid != 0 or st.st_mode & 0o077)):
        raise BackupError(f"{root} must be a directory only root can enter (remove it and retry)", "failure")
    if st.st_dev != device:
        raise BackupError(f"{root} is not on the homes filesystem: a restore could not be renamed into place")
    return tempfile.mkdtemp(prefix="restore-", dir=root)


def _restic_restore(cfg: Config, restic: Restic, snapshot_id: str, stage: str, include: str, now: float) -> None:
    try:
        restic.run(["restore", snapshot_id, "--target", stage, "--include", _escape(include)])
    except BackupError as exc:
        if "no space left" in exc.message:
            exc = BackupError(f"the homes filesystem {cfg.homes_root} is full: nothing was restored", "failure")
        raise catalog.recorded(cfg, "restore", now, exc) from None


def _open_home(cfg: Config, home: str) -> int:
    parent = os.open(cfg.homes_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return os.open(os.path.basename(home), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        raise BackupError(f"her home {home} does not exist (run the lab_users role)", "failure") from None
    except OSError as exc:
        raise BackupError(f"her home {home} is not a directory ({exc.strerror}): nothing was restored") from None
    finally:
        os.close(parent)


def _restored_dir(home_fd: int, home: str, uid: int, gid: int) -> int:
    """restored/ in her home: made by us (then given to her), or hers already -- never a link she planted."""
    made = False
    with contextlib.suppress(FileExistsError):
        os.mkdir("restored", 0o700, dir_fd=home_fd)
        made = True
    try:
        fd = os.open("restored", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=home_fd)
    except OSError:
        raise BackupError(
            f"refused: {home}/restored is not a directory (a file or a link); move it away and restore again",
            "refused",
        ) from None
    st = os.fstat(fd)
    if _as_root():
        if made:
            os.fchown(fd, uid, gid)
        elif st.st_uid != uid:
            os.close(fd)
            raise BackupError(
                f"refused: {home}/restored is not owned by her; move it away and restore again", "refused"
            )
    return fd


def _place(staged: str, restored_fd: int, base: str) -> str:
    """Rename ``staged`` to a new name in restored/: an empty directory we made first, so nothing is ever replaced."""
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        try:
            os.mkdir(name, 0o700, dir_fd=restored_fd)
        except FileExistsError:
            continue
        try:
            os.rename(staged, name, dst_dir_fd=restored_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=restored_fd)
            if exc.errno == errno.EXDEV:
                raise BackupError("the staging directory is on another filesystem than the home") from None
            raise BackupError(f"could not move the restored files into place: {exc.strerror}") from None
        return name
    raise BackupError("refused: too many restored folders with this name; tidy up restored/", "refused")


def restore_user(
    cfg: Config, user: str, snapshot: Optional[str] = None, before: Optional[str] = None, path: Optional[str] = None
) -> Dict[str, Any]:
    import time

    now = time.time()
    entry = catalog.user_of(cfg, user)
    rel = relative_path(path)
    snap = catalog.pick_snapshot(cfg, snapshot, before, entry.home)
    restic = Restic(cfg)
    target = entry.home + ("/" + rel if rel else "")
    try:
        files, size, nodes = _ls(restic, snap["id"], target)
    except BackupError as exc:
        raise catalog.recorded(cfg, "restore", now, exc) from None
    if not nodes:
        what = f"{rel!r} of her home" if rel else "her home"
        raise BackupError(f"{what} is not in snapshot {snap['short_id']} (see snapshots)", "bad-input")
    home_fd = _open_home(cfg, entry.home)
    stage = None
    try:
        home_st = os.fstat(home_fd)
        uid, gid = home_st.st_uid, home_st.st_gid
        if _as_root() and uid == 0:
            raise BackupError(f"her home {entry.home} is owned by root: fix its owner first", "failure")
        if entry.quota_bytes:
            used = usage_bytes(entry.home)
            free = max(0, entry.quota_bytes - used)
            if size > free:
                raise BackupError(
                    f"refused: restoring {'/' + rel if rel else 'her home'} from {snap['short_id']} needs {size} bytes,"
                    f" her home has {free} bytes free of its {entry.quota_bytes}-byte quota (free space or restore"
                    f" a smaller --path)",
                    "refused",
                )
        stage = _staging(cfg, home_st.st_dev)
        _restic_restore(cfg, restic, snap["id"], stage, target, now)
        staged = stage + entry.home
        if not os.path.isdir(staged) or os.path.islink(staged):
            raise BackupError(f"restic restored nothing of {target} from {snap['short_id']}")
        if _as_root():
            os.lchown(staged, uid, gid)
        os.chmod(staged, 0o700)
        restored_fd = _restored_dir(home_fd, entry.home, uid, gid)
        try:
            stamp = snap["time"].replace(":", "").rstrip("Z")
            name = _place(staged, restored_fd, f"{stamp}-{snap['short_id']}")
        finally:
            os.close(restored_fd)
    finally:
        os.close(home_fd)
        if stage:
            shutil.rmtree(stage, ignore_errors=True)
    return {"target": f"{entry.home}/restored/{name}", "files": files, "bytes": size, "snapshot": snap["id"],
            "path": rel or "."}  # fmt: skip


def _reown(staged: str, owner: Tuple[int, int]) -> None:
    """A rebuilt host may have given her account another uid: the empty home the lab_users role made says which.
    Everything of the snapshot's owner of the home goes to that owner (root-only staging: no link is followed)."""
    if not _as_root():
        return
    old = os.lstat(staged)
    if (old.st_uid, old.st_gid) == owner:
        return
    for top, dirs, files in os.walk(staged):
        for path in [top] + [os.path.join(top, n) for n in dirs + files]:
            st = os.lstat(path)
            uid = owner[0] if st.st_uid == old.st_uid else -1
            gid = owner[1] if st.st_gid == old.st_gid else -1
            if uid != -1 or gid != -1:
                mode = stat.S_IMODE(st.st_mode)
                os.lchown(path, uid, gid)
                if not stat.S_ISLNK(st.st_mode):
                    os.chmod(path, mode)  # chown clears setuid/setgid bits; keep the snapshot's mode


def restore_host(cfg: Config, snapshot: Optional[str] = None) -> Dict[str, Any]:
    """Every home of the snapshot to its place on a fresh homes volume; refused when one of them is not empty."""
    import time

    now = time.time()
    if not os.path.isdir(cfg.homes_root):
        raise BackupError(f"{cfg.homes_root} does not exist: mount the new homes volume first (storage role)")
    with state.run_lock(cfg):
        snap = catalog.pick_snapshot(cfg, snapshot, None, None)
        restic = Restic(cfg)
        try:
            files, size, nodes = _ls(restic, snap["id"], cfg.homes_root)
        except BackupError as exc:
            raise catalog.recorded(cfg, "restore-host", now, exc) from None
        prefix = cfg.homes_root.rstrip("/") + "/"
        homes = sorted(
            n["name"] for n in nodes
            if n.get("type") == "dir" and n.get("path") == prefix + str(n.get("name")) and n["name"] not in SKIP_HOMES
        )  # fmt: skip
        if not homes:
            raise BackupError(f"snapshot {snap['short_id']} holds no home under {cfg.homes_root}", "bad-input")
        busy = []
        owners: Dict[str, Tuple[int, int]] = {}
        for name in homes:
            path = os.path.join(cfg.homes_root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode) or os.listdir(path):
                busy.append(path)
            owners[name] = (st.st_uid, st.st_gid)
        if busy:
            raise BackupError(
                f"refused: {', '.join(busy)} not empty: a whole-host restore only fills absent or empty homes"
                " (restore a single user with `restore USER` instead)",
                "refused",
            )
        stage = _staging(cfg, os.stat(cfg.homes_root).st_dev)
        placed: List[str] = []
        try:
            _restic_restore(cfg, restic, snap["id"], stage, cfg.homes_root, now)
            for name in homes:
                if name in owners:
                    _reown(stage + prefix + name, owners[name])
                # rename replaces only an empty directory: a home written meanwhile stops the restore, untouched.
                try:
                    os.rename(stage + prefix + name, os.path.join(cfg.homes_root, name))
                except OSError as exc:
                    raise BackupError(
                        f"{os.path.join(cfg.homes_root, name)}: {exc.strerror}; restored so far: {', '.join(placed)}"
                    ) from None
                placed.append(name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return {"snapshot": snap["id"], "homes": placed, "files": files, "bytes": size}
