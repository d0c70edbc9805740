"""metalab-backup: restic backups of this lab host's homes, and restores that never overwrite.

Commands: init, run, check, status [--prometheus], snapshots USER, restore USER, restore-host (docs/operations.md).

Exit codes: 0 ok, 1 failure (repository unreachable or missing, wrong password, full target), 2 bad input (unknown
user, bad path or snapshot), 3 refused (nothing changed: quota, a non-empty home), 75 busy (another backup runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional, Sequence

from metalab.host.backup import api, state
from metalab.host.backup.config import CONFIG_ENV, DEFAULT_CONFIG
from metalab.host.backup.errors import CODES, BackupError


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})")
    common.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser = argparse.ArgumentParser(prog="metalab-backup", description=__doc__.splitlines()[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", parents=[common], help="initialise the repository unless it exists")
    sub.add_parser("run", parents=[common], help="back up the homes now, then apply the retention policy")
    sub.add_parser("check", parents=[common], help="check the repository (restic check)")
    p = sub.add_parser("status", parents=[common], help="last snapshot, age, last check, last error")
    p.add_argument("--prometheus", action="store_true", help="the figures in Prometheus text format")
    p = sub.add_parser("snapshots", parents=[common], help="the snapshots holding a user's home, newest first")
    p.add_argument("user")
    p = sub.add_parser("restore", parents=[common], help="restore a user's home (or a path) into <home>/restored/")
    p.add_argument("user")
    p.add_argument("--snapshot", help="snapshot id (default: the latest)")
    p.add_argument("--before", help="the newest snapshot before this ISO time")
    p.add_argument("--path", help="a file or folder relative to her home (default: all of it)")
    p = sub.add_parser("restore-host", parents=[common], help="restore every home onto a fresh, empty homes volume")
    p.add_argument("--snapshot", help="snapshot id (default: the latest of this host)")
    return parser


def _human(command: str, result: Any) -> str:
    if command == "status":
        snap = result["last_snapshot"] or {}
        lines = [
            f"host:           {result['host']}",
            f"repository:     {result['repository']}",
            f"last snapshot:  {snap.get('id', 'none')[:8]} {snap.get('time', '')} {snap.get('size_bytes', '')}",
            f"last success:   {result['last_success'] or 'never'} (age {result['age_s']} s)",
            f"max age:        {result['max_age_s']} s",
            f"stale:          {'YES' if result['stale'] else 'no'}",
            f"last check:     {json.dumps(result['last_check'])}",
            f"last error:     {json.dumps(result['last_error'])}",
        ]
        return "\n".join(lines)
    if command == "snapshots":
        return "\n".join(f"{s['short_id']}  {s['time']}" for s in result["snapshots"]) or "no snapshots"
    if command == "init":
        return ("initialised " if result["initialized"] else "already initialised: ") + result["repository"]
    if command == "run":
        s = result["snapshot"]
        return f"snapshot {s['id'][:8]}: {result['files']} files, {s['size_bytes']} bytes ({result['added_bytes']} new)"
    if command == "restore":
        where = f"from {result['snapshot'][:8]} into {result['target']}"
        return f"restored {result['files']} files ({result['bytes']} bytes) {where}"
    if command == "restore-host":
        return f"restored homes {', '.join(result['homes'])} from {result['snapshot'][:8]}"
    return json.dumps(result)


def dispatch(args: argparse.Namespace) -> Any:
    if args.command == "status" and args.prometheus:
        cfg = api.load_config(args.config)
        return state.prometheus(cfg, time.time())
    cfg = api.load_config(args.config)
    if args.command == "init":
        return api.init(cfg)
    if args.command == "run":
        return api.run(cfg)
    if args.command == "check":
        return api.check(cfg)
    if args.command == "status":
        return api.status(cfg)
    if args.command == "snapshots":
        return {"user": args.user, "snapshots": api.snapshots(cfg, args.user)}
    if args.command == "restore":
        return api.restore(cfg, args.user, snapshot=args.snapshot, before=args.before, path=args.path)
    if args.command == "restore-host":
        return api.restore_host(cfg, snapshot=args.snapshot)
    raise BackupError(f"unknown command {args.command}", "bad-input")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and CODES["bad-input"]
    try:
        result = dispatch(args)
    except BackupError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": exc.message, "code": exc.code}))
        else:
            print(f"metalab-backup {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if isinstance(result, str):
        sys.stdout.write(result)
    elif args.json:
        print(json.dumps(result if isinstance(result, dict) else {"result": result}, sort_keys=True))
    else:
        print(_human(args.command, result))
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
