"""The host side of moving a lab user's home (issue 17, groundwork; not yet wired into labctl or the roles).

Commands: manifest HOME, export HOME --to FILE.tar, import FILE.tar --manifest M --into HOME --uid U --gid G
[--quota-bytes N], verify HOME --manifest M [--uid-map OLD:NEW] [--gid-map OLD:NEW]. Runs as root.

Exit codes: 0 ok, 1 failure (tar, disk, a copy that does not verify, differences found by verify), 2 bad input,
3 refused (nothing changed: a non-empty target, the quota, an existing archive), 75 busy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from metalab.host.homes import archive, tree
from metalab.host.homes.errors import CODES, HomesError


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON object on stdout (stderr for export --to -)")
    parser = argparse.ArgumentParser(prog="metalab-homes", description=__doc__.splitlines()[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("manifest", parents=[common], help="the manifest of every entry under HOME")
    p.add_argument("home")
    p = sub.add_parser("export", parents=[common], help="HOME as a tar archive, with its manifest and sha256")
    p.add_argument("home")
    p.add_argument("--to", required=True, help="FILE.tar, or - for stdout")
    p.add_argument("--manifest", help="with --to -: write the manifest there too")
    p = sub.add_parser("import", parents=[common], help="an exported archive into a new HOME, verified first")
    p.add_argument("archive", help="FILE.tar, or - for stdin")
    p.add_argument("--manifest", help="the manifest (default: FILE.manifest.json beside FILE.tar)")
    p.add_argument("--into", required=True)
    p.add_argument("--uid", type=int, required=True)
    p.add_argument("--gid", type=int, required=True)
    p.add_argument("--quota-bytes", type=int)
    p = sub.add_parser("verify", parents=[common], help="compare HOME with a manifest")
    p.add_argument("home")
    p.add_argument("--manifest", required=True)
    p.add_argument("--uid-map", action="append", default=[], metavar="OLD:NEW")
    p.add_argument("--gid-map", action="append", default=[], metavar="OLD:NEW")
    p = sub.add_parser("ledger-export", parents=[common], help="USER's ended guard ledger rows as JSON (a move)")
    p.add_argument("user")
    p.add_argument("--ledger", required=True)
    p.add_argument("--to", required=True, help="FILE.json (never overwritten)")
    p.add_argument("--source", required=True, help="this host's inventory name")
    p.add_argument("--move-id", required=True)
    p = sub.add_parser("ledger-import", parents=[common], help="rows of ledger-export into this host's ledger, once")
    p.add_argument("rows")
    p.add_argument("--ledger", required=True)
    p = sub.add_parser("ledger-forget", parents=[common], help="remove the rows of ledger-export from this ledger")
    p.add_argument("rows")
    p.add_argument("--ledger", required=True)
    p = sub.add_parser("prepare-target", parents=[common], help="empty a fresh account's home (skel copies only)")
    p.add_argument("home")
    p.add_argument("--manifest", required=True, help="a home that already matches it is left as it is")
    p.add_argument("--uid", type=int, required=True)
    p.add_argument("--gid", type=int, required=True)
    p.add_argument("--skel", default="/etc/skel")
    return parser


def _id_map(pairs: List[str], flag: str) -> Dict[int, int]:
    out = {}
    for pair in pairs:
        old, sep, new = pair.partition(":")
        if not sep or not old.isdigit() or not new.isdigit():
            raise HomesError(f"{flag} wants OLD:NEW (numbers): {pair!r}", "bad-input")
        out[int(old)] = int(new)
    return out


def dispatch(args: argparse.Namespace) -> Any:
    if args.command == "manifest":
        return tree.build(tree.check_home_path(args.home))
    if args.command == "export":
        stdout = sys.stdout.buffer if args.to == "-" else None
        return archive.export(args.home, args.to, args.manifest, stdout=stdout)
    if args.command == "import":
        if args.archive == "-" and not args.manifest:
            raise HomesError("import from stdin needs --manifest", "bad-input")
        manifest = args.manifest or archive.siblings(args.archive)["manifest"]
        stdin = sys.stdin.buffer if args.archive == "-" else None
        return archive.import_home(args.archive, manifest, args.into, args.uid, args.gid, args.quota_bytes, stdin=stdin)
    if args.command == "verify":
        manifest = archive.load_manifest(tree.check_home_path(args.manifest, "--manifest"))
        diffs = archive.verify(
            args.home, manifest, _id_map(args.uid_map, "--uid-map"), _id_map(args.gid_map, "--gid-map")
        )
        if diffs:
            raise HomesError(f"{args.home} differs from the manifest ({len(diffs)} differences)", details=diffs)
        return {"home": args.home, "differences": []}
    if args.command.startswith("ledger-") or args.command == "prepare-target":
        return _moving(args)
    raise HomesError(f"unknown command {args.command}", "bad-input")


def _moving(args: argparse.Namespace) -> Any:
    from metalab.host.homes import moving

    if args.command == "ledger-export":
        to = tree.check_home_path(args.to, "--to")
        data = moving.ledger_export(args.ledger, args.user, args.source, args.move_id)
        if not os.path.lexists(to):
            archive.write_new(to, (json.dumps(data, sort_keys=True, indent=1) + "\n").encode())
        else:
            data = moving.load_rows(to)  # an earlier run's export (rows it listed may be gone from here since)
        return {"rows": to, "runtimes": len(data["runtimes"]), "events": len(data["events"])}
    if args.command == "prepare-target":
        home = tree.check_home_path(args.home)
        if os.path.isdir(home) and not os.path.islink(home) and os.listdir(home):
            manifest = archive.load_manifest(tree.check_home_path(args.manifest, "--manifest"))
            if not archive.verify(home, manifest, {manifest["uid"]: args.uid}, {manifest["gid"]: args.gid}):
                return {"home": home, "state": "imported"}
        return moving.prepare_target(home, args.skel)
    data = moving.load_rows(args.rows)
    if args.command == "ledger-import":
        result = moving.ledger_import(args.ledger, data)
        return dict(result, user_rows=moving.ledger_count(args.ledger, data["user"]))
    if args.command == "ledger-forget":
        result = moving.ledger_forget(args.ledger, data)
        return dict(result, user_rows=moving.ledger_count(args.ledger, data["user"]))
    raise HomesError(f"unknown command {args.command}", "bad-input")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and CODES["bad-input"]
    out = sys.stderr if args.command == "export" and args.to == "-" else sys.stdout
    try:
        try:
            result = dispatch(args)
        except OSError as exc:  # a disk, permission or rename error nothing above turned into a HomesError
            raise HomesError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc
    except HomesError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": exc.message, "code": exc.code, "details": exc.details}), file=out)
        else:
            print(f"metalab-homes {args.command}: {exc.message}", *exc.details, sep="\n  ", file=sys.stderr)
        return exc.exit_code
    if args.json or args.command == "manifest":
        print(json.dumps(dict(result, ok=True), sort_keys=True), file=out)
    else:
        print(f"{args.command}: ok ({json.dumps(result.get('totals', {}), sort_keys=True)})", file=out)
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
