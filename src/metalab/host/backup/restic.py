"""Running restic: the password only through RESTIC_PASSWORD_FILE, extra environment from the env file, SFTP over a
fixed ssh command (the host's own key, a pinned known_hosts), and restic's failures turned into messages that say
what is wrong."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from typing import Any, Dict, List, Optional, Sequence

from metalab.host.backup.config import Config
from metalab.host.backup.errors import BackupError

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z")
# sftp:user@host:/path and sftp://user@host:port//path (restic's two spellings).
SFTP_SHORT = re.compile(r"sftp:(?:([^@/:]+)@)?([^:/]+):(.*)\Z")
SFTP_URL = re.compile(r"sftp://(?:([^@/:]+)@)?([^:/]+)(?::(\d+))?/(.*)\Z")

# (pattern in restic's output, message, is it the repository's absence) -- first match wins.
_FAILURES = [
    (re.compile(r"wrong password|no key found", re.I),
     "wrong repository password: the password file does not open {repo} (check lab_backup_password)"),
    (re.compile(r"repository is already locked|unable to create lock|already locked", re.I),
     "the repository {repo} is locked by another restic process (if none runs, `restic unlock` clears a stale lock)"),
    (re.compile(r"no space left on device|disk quota exceeded|insufficient storage|quotaexceeded", re.I),
     "the backup target {repo} is full (no space left on device)"),
    (re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED", re.I),
     "the backup host's SSH key does not match known_hosts (check lab_backup_sftp_host_key)"),
    (re.compile(r"Permission denied \(publickey|unable to start the sftp session|ssh: connect to host|"
                r"Connection refused|Connection timed out|No route to host|Could not resolve hostname|"
                r"subprocess ssh: ", re.I),
     "the repository {repo} is unreachable (SFTP connection failed)"),
    (re.compile(r"Is there a repository at the following location|unable to open config file|"
                r"repository does not exist|config file does not exist", re.I),
     "the repository {repo} does not exist (initialise it: the backup role does, or `restic init`)"),
    (re.compile(r"dial tcp|no such host|i/o timeout|connection reset|TLS handshake", re.I),
     "the repository {repo} is unreachable"),
]  # fmt: skip


def read_env_file(path: Optional[str]) -> Dict[str, str]:
    """KEY=VALUE lines (systemd EnvironmentFile style: # comments, optional quotes); a missing file is no variables."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BackupError(f"env file {path}: {exc.strerror}", "failure") from None
    env: Dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = ENV_LINE.match(text)
        if not match:
            raise BackupError(f"env file {path}: line {number} is not KEY=VALUE", "failure")
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[match.group(1)] = value
    return env


def sftp_command(cfg: Config) -> Optional[str]:
    """restic's sftp.command for an sftp: repository: ssh with the host's key and only the pinned host key."""
    repo = cfg.repository
    if not repo.startswith("sftp:"):
        return None
    match = SFTP_URL.match(repo)
    if match:
        user, host, port = match.group(1), match.group(2), match.group(3)
    else:
        short = SFTP_SHORT.match(repo)
        if not short:
            raise BackupError(f"repository {repo!r}: expected sftp:USER@HOST:/PATH", "failure")
        user, host, port = short.group(1), short.group(2), None
    argv = ["ssh"]
    if cfg.ssh_key:
        argv += ["-i", cfg.ssh_key, "-o", "IdentitiesOnly=yes"]
    if cfg.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={cfg.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    argv += ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
             "-o", "ServerAliveInterval=30"]  # fmt: skip
    if port:
        argv += ["-p", port]
    argv += [f"{user}@{host}" if user else host, "-s", "sftp"]
    return " ".join(shlex.quote(a) for a in argv)


class Restic:
    def __init__(self, cfg: Config, timeout: Optional[float] = None) -> None:
        self.cfg = cfg
        self.timeout = timeout

    def env(self) -> Dict[str, str]:
        # Built from scratch: nothing of the caller's environment (a RESTIC_PASSWORD, say) reaches restic.
        env = {"PATH": SAFE_PATH, "HOME": os.environ.get("HOME", "/root"), "LC_ALL": "C.UTF-8"}
        env.update(read_env_file(self.cfg.env_file))
        env.update({
            "RESTIC_REPOSITORY": self.cfg.repository,
            "RESTIC_PASSWORD_FILE": self.cfg.password_file,
            "RESTIC_CACHE_DIR": os.path.join(self.cfg.state_dir, "cache"),
        })  # fmt: skip
        return env

    def argv(self, args: Sequence[str]) -> List[str]:
        argv = [self.cfg.restic]
        command = sftp_command(self.cfg)
        if command:
            argv += ["-o", f"sftp.command={command}"]
        return argv + list(args)

    def run(self, args: Sequence[str], ok_codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
        if not os.path.isfile(self.cfg.password_file):
            raise BackupError(f"the repository password file {self.cfg.password_file} is missing", "failure")
        try:
            proc = subprocess.run(
                self.argv(args), env=self.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=self.timeout, check=False,
            )  # fmt: skip
        except FileNotFoundError:
            raise BackupError(f"restic is not installed ({self.cfg.restic} not found)", "failure") from None
        except subprocess.TimeoutExpired:
            raise BackupError(
                f"the repository {self.cfg.public_repository()} is unreachable (no answer in {self.timeout:.0f}s)"
            ) from None
        if proc.returncode not in ok_codes:
            raise BackupError(self.explain(proc.stderr, proc.returncode), "failure")
        return proc

    def explain(self, stderr: str, code: int) -> str:
        repo = self.cfg.public_repository()
        for pattern, message in _FAILURES:
            if pattern.search(stderr or ""):
                return message.format(repo=repo)
        lines = [line for line in (stderr or "").splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"exit status {code}"
        return f"restic failed on {repo}: {detail[:300]}"

    def json_lines(self, args: Sequence[str], ok_codes: Sequence[int] = (0,)) -> List[Any]:
        out = []
        for line in self.run(list(args), ok_codes).stdout.splitlines():
            line = line.strip()
            if line.startswith(("{", "[")):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out
