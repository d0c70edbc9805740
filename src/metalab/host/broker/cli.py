"""metalab-broker: run the portal's privileged service, manage portal passwords and enrollment links (root).

Exit codes: 0 done, 1 failure (config, files), 2 refused (bad password, unknown user) or bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
from typing import Any, Optional, Sequence

from metalab.host.broker import signup
from metalab.host.broker.auth import AuthError, AuthStore, StoreError
from metalab.host.broker.config import CONFIG_ENV, BrokerConfig, BrokerConfigError, load_config
from metalab.host.broker.errors import ApiError
from metalab.host.guard import logsetup
from metalab.host.guard.config import ConfigError
from metalab.host.guard.config import load_config as load_guard_config
from metalab.host.guard.policy import parse_duration
from metalab.rules import USER_NAME

EXIT_OK, EXIT_FAILURE, EXIT_REFUSED = 0, 1, 2


class Refused(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalab-broker", description="metalab portal broker (root only).")
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or /etc/metalab/broker.json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("serve", help="run the broker on its unix socket (systemd unit metalab-broker.service)")
    sub.add_parser("serve-home", help="serve the front door on home_adapter.socket (metalab-broker-home.service)")
    p = sub.add_parser("passwd", help="set USER's portal password")
    p.add_argument("user")
    p.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    p = sub.add_parser("enroll", help="make a one-time link with which USER sets a password")
    p.add_argument("user")
    p.add_argument("--ttl", help="how long the link is valid (default: enroll_ttl of the config, 72h)")
    p.add_argument("--base-url", help="portal URL, e.g. https://lab.example.org (prints the whole link)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("unlock", help="clear USER's failed logins and lockout")
    p.add_argument("user")
    p = sub.add_parser("remove", help="remove USER's portal password (ends the user's portal sessions)")
    p.add_argument("user")
    p = sub.add_parser("users", help="users with a portal password, and lockouts")
    p.add_argument("--json", action="store_true")
    signup.add_commands(sub)  # requests, signup-approve, signup-deny, reset, mail-test
    return parser


def _broker_logging(verbose: bool) -> None:
    """The broker logs to stderr: under systemd that is the journal (``journalctl -u metalab-broker``)."""
    logger = logging.getLogger("metalab.broker")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)


def _known_user(config: BrokerConfig, user: str) -> None:
    if not USER_NAME.fullmatch(user):
        raise Refused(f"invalid user name {user!r}")
    guard = load_guard_config(config.guard_config)
    # config.homes: on a multi-host lab's front door, the users homed on other hosts (one password database).
    if user not in guard.users and user not in config.admins and user not in config.homes:
        raise Refused(f"unknown user {user!r}: not a lab user on {guard.host} (nor in the broker's admins)")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new portal password: ")
    if getpass.getpass("again: ") != first:
        raise Refused("the two passwords differ; nothing changed")
    return first


def serve(config: BrokerConfig) -> int:
    from metalab.host.broker.server import BrokerServer

    server = BrokerServer(config)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.getLogger("metalab.broker").info("listening on %s", config.socket)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return EXIT_OK


def serve_home(config: BrokerConfig) -> int:
    """The home host's adapter for the front door (metalab.host.broker.home), in the foreground."""
    from metalab.host.broker.home import HomeAdapter, HomeServer
    from metalab.host.broker.service import Broker

    if config.home_adapter is None:
        print(f"metalab-broker: {config.path} has no home_adapter (a multi-host lab's hosts only)", file=sys.stderr)
        return EXIT_FAILURE
    server = HomeServer(config.home_adapter, HomeAdapter(Broker(config)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.getLogger("metalab.broker").info("serving the front door on %s", config.home_adapter.socket)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return EXIT_OK


def dispatch(args: argparse.Namespace, config: BrokerConfig) -> int:
    if args.command == "serve":
        return serve(config)
    if args.command == "serve-home":
        return serve_home(config)
    if args.command in signup.COMMANDS:
        return signup.dispatch(args, config, _known_user)
    store = AuthStore(config)
    if args.command == "passwd":
        _known_user(config, args.user)
        store.set_password(args.user, _read_password(args.stdin))
        print(f"portal password of {args.user} set")
        return EXIT_OK
    if args.command == "enroll":
        _known_user(config, args.user)
        ttl = parse_duration(args.ttl) if args.ttl else None
        info: Any = store.create_enrollment(args.user, ttl)
        if args.base_url:
            info["url"] = f"{args.base_url.rstrip('/')}/enroll/{info['token']}"
        if args.json:
            print(json.dumps(info, sort_keys=True))
        else:
            print(info.get("url") or info["token"])
            print(f"(single use, valid until {info['expires']})", file=sys.stderr)
        return EXIT_OK
    if args.command == "unlock":
        print(f"unlocked {args.user}" if store.unlock(args.user) else f"{args.user} was not locked")
        return EXIT_OK
    if args.command == "remove":
        print(f"removed the password of {args.user}" if store.remove_password(args.user) else "no password set")
        return EXIT_OK
    if args.command == "users":
        users = store.list_users()
        if args.json:
            print(json.dumps(users, sort_keys=True))
        else:
            for name, entry in users.items():
                locked = f"  locked until {entry['locked_until']}" if entry["locked_until"] else ""
                print(f"{name}  changed {entry['changed']}{locked}")
        return EXIT_OK
    raise AssertionError(args.command)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        logsetup.setup(None, args.verbose)  # the guard's own log (journal/syslog), as for metalab-guard
        _broker_logging(args.verbose)
        return dispatch(args, config)
    except (Refused, AuthError, ApiError) as exc:
        print(f"metalab-broker: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (BrokerConfigError, ConfigError, StoreError, OSError, ValueError) as exc:
        print(f"metalab-broker: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
