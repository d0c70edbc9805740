"""`labctl doctor`: controller checks plus one read-only Ansible fan-out (playbooks/doctor.yml).

The probes run on the hosts; judging them is pure (``evaluate_controller``, ``evaluate_host``)
so that every verdict is unit-tested. A probe whose component is not installed yet is 'n/a'.

Exit code: 0 when no finding is 'fail' (warnings allowed), 2 otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from metalab import rules
from metalab.labctl import backup, collection, config, output, runner

OK, WARN, FAIL, NA = "ok", "warn", "fail", "n/a"
CONTROLLER = "(controller)"
REPORT_TASK = "Report the probe results"
QUOTA_OPTIONS = ("usrquota", "uquota", "usrjquota", "quota", "prjquota", "pquota", "grpquota", "gquota")
GUARD_MAX_AGE = 180  # seconds: the guard runs every minute from cron
MIN_PYTHON = (3, 11)


@dataclass(frozen=True)
class Finding:
    host: str
    check: str
    status: str  # ok | warn | fail | n/a
    detail: str = ""
    action: str = ""  # what to do about it; empty when nothing


# --- controller ---------------------------------------------------------------------------------------------


def pinned_version(package: str) -> str | None:
    """The version of ``package`` that metalab pins (pyproject's dependencies), if any."""
    try:
        requires = metadata.requires("metalab") or []
    except metadata.PackageNotFoundError:
        return None
    for req in requires:
        name, _, version = req.partition("==")
        if name.strip().lower() == package and version:
            return version.split(";")[0].strip()
    return None


def evaluate_controller(
    *,
    ansible_version: str | None,
    ansible_pinned: str | None,
    python_version: tuple[int, int, int],
    inventory: Mapping[str, Any] | None,
    inventory_error: str,
    users_errors: list[str],
    readable: Callable[[str], bool],
) -> list[Finding]:
    """Findings about the controller and the inventory, from facts gathered by the caller."""
    f: list[Finding] = []
    if ansible_version is None:
        f.append(Finding(CONTROLLER, "ansible-core", FAIL, "not importable", "reinstall: pip install -e ."))
    elif ansible_pinned and ansible_version != ansible_pinned:
        f.append(
            Finding(
                CONTROLLER,
                "ansible-core",
                WARN,
                f"{ansible_version}, metalab is tested with {ansible_pinned}",
                f"pip install ansible-core=={ansible_pinned}",
            )
        )
    else:
        f.append(Finding(CONTROLLER, "ansible-core", OK, ansible_version))
    py = ".".join(map(str, python_version))
    if python_version[:2] < MIN_PYTHON:
        f.append(Finding(CONTROLLER, "python", FAIL, py, "use Python >= 3.11 for the controller venv"))
    else:
        f.append(Finding(CONTROLLER, "python", OK, py))
    if inventory is None:
        f.append(Finding(CONTROLLER, "inventory parses", FAIL, inventory_error, "fix the inventory file named above"))
        return f
    hostvars: Mapping[str, Any] = (inventory.get("_meta") or {}).get("hostvars") or {}
    f.append(Finding(CONTROLLER, "inventory parses", OK, f"{len(hostvars)} host(s)"))
    if users_errors:
        f.append(
            Finding(CONTROLLER, "lab_users valid", FAIL, "; ".join(users_errors), "fix lab_users (labctl users list)")
        )
    else:
        f.append(Finding(CONTROLLER, "lab_users valid", OK))
    keys: dict[str, list[str]] = {}
    for host, hv in sorted(hostvars.items()):
        key = hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file")
        if isinstance(key, str) and key:
            keys.setdefault(key, []).append(host)
    for key, hosts in sorted(keys.items()):
        names = ", ".join(hosts[:3]) + (f" (+{len(hosts) - 3})" if len(hosts) > 3 else "")
        if "{{" in key:
            f.append(Finding(CONTROLLER, "ssh key readable", WARN, f"{key} is templated; not checked ({names})"))
        elif readable(key):
            f.append(Finding(CONTROLLER, "ssh key readable", OK, f"{key} ({names})"))
        else:
            detail, action = (
                f"{key} is missing or unreadable ({names})",
                "create the key or fix ansible_ssh_private_key_file",
            )
            f.append(Finding(CONTROLLER, "ssh key readable", FAIL, detail, action))
    return f


def read_inventory(inventory: str | None) -> tuple[dict[str, Any] | None, str]:
    """`ansible-inventory --list` with the collection's ansible.cfg: (data, error)."""
    root = collection.root()
    cmd = [str(Path(sys.executable).parent / "ansible-inventory"), "--list"]
    if inventory:
        cmd += ["-i", inventory]
    env = {**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    # ansible-inventory only warns about an unparsable source; treat its warning as the error.
    problems = [line for line in proc.stderr.splitlines() if "Unable to parse" in line or "ERROR" in line]
    if proc.returncode != 0 or problems:
        return None, " ".join((problems or proc.stderr.strip().splitlines() or ["ansible-inventory failed"])[-2:])
    try:
        return json.loads(proc.stdout), ""
    except json.JSONDecodeError as exc:
        return None, f"ansible-inventory printed no JSON: {exc}"


def users_errors_from(data: Mapping[str, Any]) -> list[str]:
    """Validate each distinct lab_users list that hosts see (usually one, from group all)."""
    from metalab.labctl import inventory

    seen: set[str] = set()
    errors: list[str] = []
    for hv in ((data.get("_meta") or {}).get("hostvars") or {}).values():
        lab_users = hv.get("lab_users")
        if lab_users is None:
            continue
        key = json.dumps(lab_users, sort_keys=True, default=str)
        if key in seen or "{{" in key:
            continue
        seen.add(key)
        settings = {
            k: hv.get(v) for k, v in (("default_quota", "lab_users_default_quota"), ("prefix", "lab_users_prefix"))
        }
        errors += inventory.validate(lab_users, **{k: v for k, v in settings.items() if v is not None})
    return errors


# --- hosts ---------------------------------------------------------------------------------------------------


def _int(value: Any, default: int = -1) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "yes", "1")


def evaluate_host(
    host: str, report: Mapping[str, Any] | None, problem: str = "", unreachable: bool = False
) -> list[Finding]:
    """Findings for one host from its probe report (the msg of the report task)."""
    if unreachable:
        return [
            Finding(host, "reachable", FAIL, problem, "check the host is up, ansible_host/port, the SSH key and user")
        ]
    if report is None:
        return [Finding(host, "reachable", FAIL, problem or "no probe report", "run labctl doctor again with -v")]
    f = [Finding(host, "reachable", OK)]
    dist, major = str(report.get("distribution", "")), str(report.get("distribution_major_version", ""))
    if rules.platform_problem(dist, major) is None:
        f.append(Finding(host, "supported OS", OK, f"{dist} {major}"))
    else:
        detail, action = f"{dist} {major}".strip() or "unknown", f"metalab supports {rules.PLATFORMS_HELP}"
        f.append(Finding(host, "supported OS", FAIL, detail, action))
    f.append(_homes(host, report))
    f += _podman(host, report)
    f.append(_frontdoor(host, report))
    f += _guard(host, report)
    return f + [Finding(host, *check) for check in backup.doctor_checks(dict(report))]


def _homes(host: str, report: Mapping[str, Any]) -> Finding:
    root = str(report.get("homes_root", ""))
    mount: Mapping[str, Any] = report.get("homes_mount") or {}
    if str(report.get("homes_device", "auto")) == "none":
        return Finding(host, "homes volume", NA, f"lab_homes_device is none: homes live on {root} without quotas")
    if not _bool(report.get("homes_exists")):
        return Finding(host, "homes volume", NA, f"{root} does not exist yet", "run labctl provision")
    if not mount:
        return Finding(
            host, "homes volume", FAIL, f"nothing is mounted at {root}", "check lab_homes_device, then labctl provision"
        )
    options = str(mount.get("options", "")).split(",")
    where = f"{mount.get('source', '?')} ({mount.get('fstype', '?')}) at {root}"
    if not any(o.split("=")[0] in QUOTA_OPTIONS for o in options):
        return Finding(
            host, "homes volume", FAIL, f"{where} has no quota options", "remount with quotas: run labctl provision"
        )
    return Finding(host, "homes volume", OK, where)


def _podman(host: str, report: Mapping[str, Any]) -> list[Finding]:
    if not _bool(report.get("podman_installed")):
        return [
            Finding(host, "podman", NA, "podman is not installed yet", "run labctl provision"),
            Finding(host, "runtime image", NA, "needs podman"),
        ]
    rc = _int(report.get("podman_rc"))
    if rc != 0:
        detail = str(report.get("podman_error", "")) or f"podman info: rc {rc}"
        return [
            Finding(host, "podman", FAIL, detail, "on the host: podman info; then labctl provision"),
            Finding(host, "runtime image", NA, "needs a working podman"),
        ]
    image = str(report.get("image", ""))
    if _int(report.get("image_rc")) == 0:
        return [Finding(host, "podman", OK), Finding(host, "runtime image", OK, image)]
    return [
        Finding(host, "podman", OK),
        Finding(host, "runtime image", FAIL, f"{image} is missing", "labctl provision --tags runtimes"),
    ]


def _frontdoor(host: str, report: Mapping[str, Any]) -> Finding:
    check = f"front door :{_int(report.get('frontdoor_port'), 443)}"
    if not _bool(report.get("frontdoor_installed")):
        return Finding(host, check, NA, "nginx is not installed yet", "run labctl provision")
    status = _int(report.get("frontdoor_status"))
    if 200 <= status < 500:
        return Finding(host, check, OK, f"HTTP {status}")
    if status in (502, 503, 504):  # nginx answers; what it proxies / to (the portal) does not
        return Finding(
            host,
            check,
            WARN,
            f"nginx answers, but / gives HTTP {status}: the portal behind it is not answering",
            "on the host: systemctl status metalab-portal; journalctl -u metalab-portal",
        )
    detail = f"HTTP {status}" if status > 0 else (str(report.get("frontdoor_msg", "")) or "no answer")
    return Finding(host, check, FAIL, detail, "on the host: systemctl status nginx; nginx -t")


def _guard(host: str, report: Mapping[str, Any]) -> list[Finding]:
    config = str(report.get("guard_config") or rules.GUARD_CONFIG)
    if not _bool(report.get("guard_installed")):
        return [
            Finding(host, "guard cron", NA, f"session_limits not installed yet (no {config})", "run labctl provision"),
            Finding(host, "guard ran recently", NA, "session_limits not installed yet"),
        ]
    found = []
    cron = str(report.get("guard_cron") or "/etc/cron.d/metalab-guard")
    if _bool(report.get("guard_cron_present")):
        found.append(Finding(host, "guard cron", OK, cron))
    else:
        found.append(
            Finding(
                host,
                "guard cron",
                FAIL,
                f"{cron} is missing: runtimes are not stopped at their limits",
                "labctl provision --tags runtimes",
            )
        )
    stamp = str(report.get("guard_stamp") or "guard.last-run")
    mtime, now = _int(report.get("guard_stamp_mtime"), 0), _int(report.get("now"), 0)
    installed = _int(report.get("guard_config_mtime"), 0)
    if mtime <= 0 and installed > 0 and now - installed <= GUARD_MAX_AGE:
        verdict = (
            WARN,
            f"configured {max(0, now - installed)}s ago, no run yet ({stamp} is missing)",
            "cron runs the guard every minute: run labctl doctor again in a minute",
        )
    elif mtime <= 0:
        verdict = (
            FAIL,
            f"the guard has never run ({stamp} is missing)",
            "check cron and the journal (journalctl -t metalab-guard)",
        )
    elif now - mtime > GUARD_MAX_AGE:
        verdict = (
            FAIL,
            f"last run {now - mtime}s ago (expected every minute)",
            "on the host: run metalab-guard run by hand and read its error; check cron",
        )
    else:
        verdict = (OK, f"{max(0, now - mtime)}s ago", "")
    found.append(Finding(host, "guard ran recently", *verdict))
    found.append(_guard_lock(host, _int(report.get("guard_skip_mtime"), 0), mtime, now))
    return found


def _guard_lock(host: str, skipped: int, last_run: int, now: int) -> Finding:
    """A guard run that gave up waiting for its lock enforced nothing: shown until a later run succeeded."""
    if skipped <= 0:
        return Finding(host, "guard lock", OK, "no run has had to give up waiting for the lock")
    if skipped >= last_run:
        return Finding(
            host,
            "guard lock",
            FAIL,
            f"the last guard run ({max(0, now - skipped)}s ago) could not take its lock and enforced nothing",
            "on the host: journalctl -t metalab-guard; fuser -v /run/metalab/guard.lock (a stuck start or stop?)",
        )
    return Finding(
        host, "guard lock", OK, f"a run gave up on a busy lock {max(0, now - skipped)}s ago; later runs succeeded"
    )


def reports_from(model: runner.ProgressModel) -> dict[str, Mapping[str, Any]]:
    """host -> probe report, from the ok results of the report task (the model watched REPORT_TASK)."""
    results = model.results.get(REPORT_TASK, {}).values()
    return {r.host: r.res["msg"] for r in results if r.outcome == "ok" and isinstance(r.res.get("msg"), Mapping)}


def exit_code(findings: list[Finding]) -> int:
    return 2 if any(x.status == FAIL for x in findings) else 0


def _status(message: str, show: bool) -> AbstractContextManager[Any]:
    """A spinner on stderr while the probes run (only for a table on a terminal)."""
    if not show:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)


COLUMNS = [
    output.Column("host"),
    output.Column("check"),
    output.Column("status", styled=True),
    output.Column("detail"),
    output.Column("action", "what to do"),
]


@click.command("doctor")
@click.option("-i", "--inventory", metavar="INVENTORY", help="Inventory file or directory [env: METALAB_INVENTORY].")
@click.option("--limit", metavar="HOSTS", help="Only probe these hosts or groups.")
@click.option("--controller-only", is_flag=True, help="Skip the per-host probes.")
@output.output_options()
def cli(inventory: str | None, limit: str | None, controller_only: bool, output: str | None) -> None:  # noqa: A002
    """Check the controller, the inventory and every lab host (read-only).

    Exit code 0 when nothing failed (warnings allowed), 2 when a check failed.
    """
    from metalab.labctl import output as out

    fmt = out.resolve_format(output)
    inv = config.inventory(inventory)
    try:
        import ansible.release

        ansible_version: str | None = ansible.release.__version__
    except ImportError:  # pragma: no cover - ansible-core is a dependency
        ansible_version = None
    data, error = read_inventory(inv)
    findings = evaluate_controller(
        ansible_version=ansible_version,
        ansible_pinned=pinned_version("ansible-core"),
        python_version=sys.version_info[:3],
        inventory=data,
        inventory_error=error,
        users_errors=users_errors_from(data) if data else [],
        readable=lambda p: os.access(Path(p).expanduser(), os.R_OK) and Path(p).expanduser().is_file(),
    )
    if data is not None and not controller_only:
        model = runner.ProgressModel(watch=frozenset({REPORT_TASK}))
        with _status("probing lab hosts...", fmt == "table" and sys.stderr.isatty()):
            result = runner.run_playbook("doctor", inventory=inv, limit=limit, model=model)
        reports = reports_from(model)
        for name, h in model.hosts.items():
            findings += evaluate_host(name, reports.get(name), h.last_error, unreachable=bool(h.unreachable))
        if not model.hosts:
            findings.append(
                Finding(CONTROLLER, "host probes", WARN, f"no host answered (artifacts: {result.artifacts})")
            )
    out.emit([asdict(x) for x in findings], COLUMNS, fmt, title="labctl doctor")
    sys.exit(exit_code(findings))
