"""metalab-guard: session engine and guard of a lab host (cron, labctl, the Ansible module and the portal use it).

Exit codes: 0 done (also: nothing to do), 1 failure (engine, config, lock), 2 refused (nothing changed) or bad usage.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, List, Optional, Sequence

from metalab.host.guard import drain, files, homeusage, logsetup, metrics
from metalab.host.guard.config import CONFIG_ENV, Config, ConfigError, load_config
from metalab.host.guard.engine import EngineError
from metalab.host.guard.ledger import LedgerError
from metalab.host.guard.policy import format_duration, format_iso, parse_duration
from metalab.host.guard.sessions import Failure, Lab, Refused
from metalab.rules import human_size

EXIT_OK, EXIT_FAILURE, EXIT_REFUSED = 0, 1, 2


def parse_since(value: str, now: float) -> float:
    """An ISO date/time (UTC unless it says otherwise) or a duration back from now ("7d", "12h")."""
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {value!r}: expected an ISO date/time (2024-05-01T08:00Z) or a duration (7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalab-guard", description="metalab runtimes: sessions, limits, guard.")
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or /etc/metalab/guard.json)")
    parser.add_argument("--now", type=float, help=argparse.SUPPRESS)  # tests and benchmarks: a fixed clock
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="one guard run (cron, every minute): warn, stop, clean up")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("boot", help="at boot: close every open runtime with reason host-restart")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("start", help="start a runtime for USER")
    p.add_argument("user")
    p.add_argument("--gpu", action="store_true", help="a GPU runtime (default: CPU)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("stop", help="stop USER's runtime")
    p.add_argument("user")
    p.add_argument("--reason", default="admin", help="recorded end reason (default: admin)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("extend", help="give USER's running runtime more time (e.g. 1h)")
    p.add_argument("user")
    p.add_argument("duration")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("list", help="runtimes running on this host")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("usage", help="hours used per user and kind")
    p.add_argument("--since", help="ISO date/time or duration back from now (default: all time)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p = sub.add_parser("metrics", help="write the Prometheus textfile")
    p.add_argument("--output", help="textfile path (default: metrics_path of the config)")
    p.add_argument(
        "--quota-file", help='JSON {"user": {"used_bytes": N, "limit_bytes": N}} (default: the usage file, if any)'
    )
    p = sub.add_parser(
        "home-usage", help="measure every lab user's home (quota report or walk); --write the usage file"
    )
    p.add_argument("--write", action="store_true", help="write the usage file (usage.file of the config)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("drain", help="refuse new runtimes on this host (an update is coming) and warn running ones")
    p.add_argument("--reason", default=drain.DEFAULT_REASON, help="shown to users (default: %(default)s)")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for running runtimes to end (default 0)")
    p.add_argument("--stop", action="store_true", help="then stop those still running (end reason host-update)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("undrain", help="accept new runtimes again")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("token", help="print USER's runtime token (root only)")
    p.add_argument("user")
    return parser


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _table(rows: List[List[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _run_report(report: Any, as_json: bool) -> int:
    if as_json:
        _print_json(report.as_dict())
    for error in report.errors:
        print(f"metalab-guard: {error}", file=sys.stderr)
    return EXIT_FAILURE if report.errors else EXIT_OK


def dispatch(args: argparse.Namespace, config: Config) -> int:
    now = args.now
    clock = time.time() if now is None else now
    if args.command == "token":
        if os.geteuid() != 0:
            raise Failure("token: only root may read runtime tokens")
        if args.user not in config.users:
            raise Refused(f"unknown user {args.user!r}: not a lab user on {config.host}")
        token = files.read_token(config.runtime.token_dir, args.user)
        if token is None:  # tokens live as long as the runtime: a new one at every start
            raise Refused(f"{args.user} has no runtime running, so no token (start one first)")
        print(token)
        return EXIT_OK
    if args.command == "undrain":
        removed = drain.clear(config.drain_file)
        if args.json:
            _print_json({"drained": False, "removed": removed, "drain_file": config.drain_file})
        else:
            print(f"{config.host} accepts new runtimes again" if removed else f"{config.host} was not drained")
        return EXIT_OK
    if args.command == "metrics":
        lab = Lab(config)
        try:
            quota_file = args.quota_file or config.usage.file
            quota = metrics.load_quota(quota_file) if args.quota_file or os.path.exists(quota_file) else None
            budgets = {name: dict(u.policy.budgets) for name, u in config.users.items()}
            text = metrics.render(lab.ledger, clock, config.host, budgets, quota, len(config.runtime.gpus))
            metrics.write(args.output or config.metrics_path, text)
        finally:
            lab.close()
        return EXIT_OK
    if args.command == "home-usage":
        measured = homeusage.measure(config, clock)
        if args.write:
            homeusage.write(config.usage.file, measured)
        if args.json:
            _print_json(measured)
        elif not args.write:
            rows = [["USER", "USED", "QUOTA", "SOURCE"]]
            for name, u in measured.items():
                limit = human_size(u["limit_bytes"]) if u["limit_bytes"] else "-"
                partial = " (partial)" if u.get("partial") else ""
                rows.append([name, human_size(u["used_bytes"]), limit, u["source"] + partial])
            _table(rows)
        return EXIT_OK

    lab = Lab(config, actor=os.environ.get("SUDO_USER") or "metalab-guard")
    try:
        if args.command == "run":
            return _run_report(lab.run(now), args.json)
        if args.command == "boot":
            return _run_report(lab.boot(now), args.json)
        if args.command == "drain":
            result = drain.drain(lab, args.reason, clock, wait=args.wait, stop=args.stop)
            if args.json:
                _print_json(result)
            else:
                print(
                    f"{config.host} is drained: no new runtimes; {len(result['warned'])} warned, "
                    f"{len(result['finished'])} ended, {len(result['stopped'])} stopped, "
                    f"{len(result['running'])} still running"
                )
            return EXIT_OK
        if args.command == "start":
            info = lab.start(args.user, "gpu" if args.gpu else "cpu", now)
            if args.json:
                _print_json(info)
            else:
                gpu = f" on GPU {info['gpu']}" if info["gpu"] is not None else ""
                print(
                    f"started {info['kind']} runtime for {info['user']}{gpu}; "
                    f"stops in {format_duration(info['time_left_seconds'])} ({info['deadline']})"
                )
            return EXIT_OK
        if args.command == "stop":
            result = lab.stop(args.user, args.reason, now)
            if args.json:
                _print_json(result)
            else:
                print(f"stopped the runtime of {args.user}" if result["stopped"] else result["message"])
            return EXIT_OK
        if args.command == "extend":
            try:
                seconds = parse_duration(args.duration)
            except ValueError as exc:
                raise Refused(str(exc)) from None
            info = lab.extend(args.user, seconds, now)
            if args.json:
                _print_json(info)
            else:
                print(f"extended the runtime of {args.user}; stops in {format_duration(info['time_left_seconds'])}")
            return EXIT_OK
        if args.command == "list":
            status = lab.status(now)
            if args.json:
                _print_json(status)
            elif status:
                rows = [["USER", "HOST", "KIND", "GPU", "STARTED", "STATE", "TIME LEFT", "BUDGET LEFT"]]
                for s in status:
                    budget = "-" if s["budget_left_seconds"] is None else format_duration(s["budget_left_seconds"])
                    gpu = "-" if s["gpu"] is None else str(s["gpu"])
                    rows.append(
                        [s["user"], s["host"], s["kind"], gpu, s["started"], s["state"],
                         format_duration(s["time_left_seconds"]), budget]
                    )  # fmt: skip
                _table(rows)
            else:
                print("no runtimes running")
            return EXIT_OK
        if args.command == "usage":
            try:
                since = parse_since(args.since, clock) if args.since else 0.0
            except ValueError as exc:
                raise Refused(str(exc)) from None
            usage = lab.usage(since, clock)
            if args.json:
                _print_json({"since": format_iso(since), "until": format_iso(clock), "usage": usage})
            elif args.csv:
                writer = csv.writer(sys.stdout)
                writer.writerow(["user", "kind", "hours", "seconds", "sessions"])
                for u in usage:
                    writer.writerow([u["user"], u["kind"], f"{u['hours']:.2f}", u["seconds"], u["sessions"]])
            elif usage:
                rows = [["USER", "KIND", "HOURS", "SESSIONS"]]
                rows += [[u["user"], u["kind"], f"{u['hours']:.2f}", str(u["sessions"])] for u in usage]
                _table(rows)
            else:
                print("no usage recorded")
            return EXIT_OK
    finally:
        lab.close()
    raise AssertionError(args.command)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        logsetup.setup(config.log_file, args.verbose)
        return dispatch(args, config)
    except Refused as exc:
        print(f"metalab-guard: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (ConfigError, Failure, EngineError, LedgerError, files.FileError, OSError, ValueError) as exc:
        print(f"metalab-guard: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
