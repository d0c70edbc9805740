"""labctl's one Ansible executor: every command that runs Ansible runs a playbook of playbooks/ through
``run_playbook`` and reads what happened from one event parser, ``ProgressModel``.

``ProgressModel`` is pure: it is fed ansible-runner event dicts (live, or replayed
from ``artifacts/<ident>/job_events/*.json``) and holds per-host state, the results of
the tasks the caller asked for by name, the summary and the exit code.
``run_playbook`` is the impure edge (the displays are in metalab.labctl.display).

Exit codes (``labctl provision`` and everything that runs a playbook):

- 0: every host ok (changed is ok)
- 1: the run did not complete (bad inventory, syntax error, no recap) or labctl failed
- 2: at least one host failed a task
- 3: no host failed, but at least one was unreachable
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from metalab.labctl import collection

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_FAILED = 2
EXIT_UNREACHABLE = 3

# Events that carry a task result for one host.
RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
# Keys of playbook_on_stats, mapped to HostProgress fields.
_STATS_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "ignored": "ignored",
    "rescued": "rescued",
}
# Events whose output says why a run ended without a recap (inventory or syntax errors, warnings).
_MESSAGE_EVENTS = ("verbose", "error", "warning", "deprecated")


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass
class HostProgress:
    """What one host has done so far. Counts follow Ansible's recap: a changed task also counts as ok."""

    name: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    ignored: int = 0
    rescued: int = 0
    role: str = ""
    task: str = ""
    first_start: float | None = None
    last_end: float | None = None
    last_error: str = ""  # "task: message", shortened, for the displays
    message: str = ""  # the last failure's or unreachable's message in full (one line)
    # True while the host runs a task (runner_on_start seen, no result yet).
    busy: bool = False

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        if self.changed:
            return "changed"
        return "ok"

    @property
    def duration(self) -> float:
        if self.first_start is None or self.last_end is None:
            return 0.0
        return max(0.0, self.last_end - self.first_start)

    def elapsed(self, now: float) -> float:
        """Seconds since the host started its first task, up to ``now`` (wall clock, epoch seconds)."""
        if self.first_start is None:
            return 0.0
        return max(0.0, now - self.first_start)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.name,
            "status": self.status,
            "ok": self.ok,
            "changed": self.changed,
            "failed": self.failed,
            "unreachable": self.unreachable,
            "skipped": self.skipped,
            "ignored": self.ignored,
            "rescued": self.rescued,
            "duration": round(self.duration, 1),
            "error": self.last_error,
        }


@dataclass(frozen=True)
class TaskResult:
    """One host's result of a task the caller watches: outcome ok | failed | unreachable | skipped, and its res."""

    host: str
    outcome: str
    res: Mapping[str, Any]


@dataclass
class ProgressModel:
    """Per-host progress of one playbook run, built only from ansible-runner events.

    ``watch``: names of tasks whose per-host results are kept in ``results`` (task -> host -> TaskResult).
    """

    watch: frozenset[str] = frozenset()
    hosts: dict[str, HostProgress] = field(default_factory=dict)
    results: dict[str, dict[str, TaskResult]] = field(default_factory=dict)
    # The last lines of Ansible's own messages: what to show when a run ends without a recap.
    messages: deque[str] = field(default_factory=lambda: deque(maxlen=15))
    play: str = ""
    role: str = ""
    task: str = ""
    finished: bool = False
    started: float | None = None

    def host(self, name: str) -> HostProgress:
        if name not in self.hosts:
            self.hosts[name] = HostProgress(name)
        return self.hosts[name]

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        created = _parse_time(event.get("created"))
        if self.started is None and created is not None:
            self.started = created
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "") or data.get("name", "")
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.task = data.get("task", "")
            self.role = data.get("role", "") or ""
        elif kind == "runner_on_start" and data.get("host"):
            h = self.host(data["host"])
            h.task, h.role, h.busy = data.get("task", ""), data.get("role", "") or "", True
            start = _parse_time(data.get("start")) or created
            if h.first_start is None and start is not None:
                h.first_start = start
        elif kind in RESULT_EVENTS and data.get("host"):
            self._result(RESULT_EVENTS[kind], data, created)
        elif kind == "playbook_on_stats":
            self._stats(data)
        elif kind in _MESSAGE_EVENTS and event.get("stdout"):
            self.messages.extend(str(event["stdout"]).splitlines())

    def _result(self, outcome: str, data: Mapping[str, Any], created: float | None) -> None:
        h = self.host(data["host"])
        h.busy = False
        h.task, h.role = data.get("task", h.task), data.get("role", "") or ""
        start, end = _parse_time(data.get("start")), _parse_time(data.get("end")) or created
        if start is not None and (h.first_start is None or start < h.first_start):
            h.first_start = start
        if end is not None and (h.last_end is None or end > h.last_end):
            h.last_end = end
        res: Mapping[str, Any] = data.get("res") or {}
        if h.task in self.watch:
            self.results.setdefault(h.task, {})[h.name] = TaskResult(h.name, outcome, res)
        if outcome == "failed" and data.get("ignore_errors"):
            h.ignored += 1
        elif outcome in ("failed", "unreachable"):
            h.failed, h.unreachable = h.failed + (outcome == "failed"), h.unreachable + (outcome == "unreachable")
            h.last_error = one_line(res.get("msg"), h.task)
            h.message = " ".join(str(res.get("msg") or "").split())
        elif outcome == "skipped":
            h.skipped += 1
        else:
            h.ok += 1
            if res.get("changed"):
                h.changed += 1

    def _stats(self, data: Mapping[str, Any]) -> None:
        """The recap is authoritative: it replaces the counts gathered along the way."""
        self.finished = True
        names: set[str] = set()
        for key in (*_STATS_KEYS, "processed"):
            names.update((data.get(key) or {}).keys())
        for name in sorted(names):
            h = self.host(name)
            h.busy = False
            for key, attr in _STATS_KEYS.items():
                setattr(h, attr, int((data.get(key) or {}).get(name, 0)))

    def summary(self) -> list[dict[str, Any]]:
        return [h.as_dict() for h in self.hosts.values()]

    def exit_code(self) -> int:
        if any(h.failed for h in self.hosts.values()):
            return EXIT_FAILED
        if any(h.unreachable for h in self.hosts.values()):
            return EXIT_UNREACHABLE
        if not self.finished:
            return EXIT_ERROR
        return EXIT_OK


def one_line(msg: Any, task: str) -> str:
    text = " ".join(str(msg or "").split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{task}: {text}" if task else text


def replay(events: Iterable[Mapping[str, Any]], model: ProgressModel | None = None) -> ProgressModel:
    model = model or ProgressModel()
    for event in events:
        model.feed(event)
    return model


# --- running -----------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where labctl keeps ansible-runner's private data and artifacts: $METALAB_CACHE, else XDG cache."""
    env = os.environ.get("METALAB_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "metalab"


@dataclass
class RunResult:
    model: ProgressModel
    artifacts: Path | None  # None when the run's artifacts were not kept
    status: str
    rc: int | None

    @property
    def exit_code(self) -> int:
        return self.model.exit_code()


def playbook_path(name: str) -> Path:
    """``site`` -> <collection>/playbooks/site.yml; refuses names that are not playbooks of the collection.

    Only the top level counts: playbooks/labctl/ holds the playbooks of labctl's own commands.
    """
    stem = name[:-4] if name.endswith(".yml") else name
    path = collection.root() / "playbooks" / f"{stem}.yml"
    if "/" in stem or not path.is_file():
        known = sorted(p.stem for p in (collection.root() / "playbooks").glob("*.yml"))
        raise FileNotFoundError(f"no playbook {stem!r} in the collection (known: {', '.join(known) or 'none'})")
    return path


def command_playbook(name: str) -> Path:
    """The playbook of a labctl command: <collection>/playbooks/labctl/<name>.yml."""
    return collection.root() / "playbooks" / "labctl" / f"{name}.yml"


def ensure_tools_on_path() -> None:
    """Put this interpreter's bin directory (the venv's ansible-playbook) first on PATH, activated or not."""
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"


MITOGEN_INSTALL_HINT = "pip install 'metalab[mitogen]'"
# Mitogen's drop-in for Ansible's linear strategy: same task order, modules run in a persistent interpreter per host.
MITOGEN_STRATEGY = "mitogen_linear"


class MitogenNotInstalled(RuntimeError):
    pass


def mitogen_env() -> dict[str, str]:
    """The environment that makes ansible-playbook use Mitogen for Ansible (the optional ``mitogen`` extra).

    ``ANSIBLE_STRATEGY_PLUGINS`` points at the installed ``ansible_mitogen`` package's strategy plugins (ahead of
    any the caller already set) and ``ANSIBLE_STRATEGY`` selects its linear strategy. Raises MitogenNotInstalled,
    naming the fix, when this interpreter cannot import ansible_mitogen.
    """
    spec = importlib.util.find_spec("ansible_mitogen")  # locates the package without importing Ansible
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    strategies = [Path(p) / "plugins" / "strategy" for p in locations]
    found = next((d for d in strategies if (d / f"{MITOGEN_STRATEGY}.py").is_file()), None)
    if found is None:
        where = ""
        if locations:  # installed, but not the layout this helper knows (a broken or unexpected version)
            where = f" (ansible_mitogen at {locations[0]} has no plugins/strategy/{MITOGEN_STRATEGY}.py)"
        raise MitogenNotInstalled(
            f"Mitogen for Ansible is not installed for {sys.executable}{where}: {MITOGEN_INSTALL_HINT}"
        )
    paths = [str(found), *(p for p in os.environ.get("ANSIBLE_STRATEGY_PLUGINS", "").split(os.pathsep) if p)]
    return {"ANSIBLE_STRATEGY_PLUGINS": os.pathsep.join(dict.fromkeys(paths)), "ANSIBLE_STRATEGY": MITOGEN_STRATEGY}


def run_playbook(
    playbook: str | Path,
    *,
    inventory: str | None = None,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    check: bool = False,
    extravars: Mapping[str, Any] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    model: ProgressModel | None = None,
    keep_artifacts: int = 30,
    mitogen: bool = False,
) -> RunResult:
    """Run a playbook (a name of the collection's playbooks/, or a path); every event goes to ``model``, then
    ``on_event``.

    ``keep_artifacts``: how many runs' artifacts (events, stdout) to keep under the cache directory; 0 keeps none:
    they stay in the run's private directory and go with it (for runs whose results hold secrets).
    ``mitogen``: run it with Mitogen for Ansible's strategy (see mitogen_env); raises MitogenNotInstalled before
    anything runs when it is not installed.
    """
    import ansible_runner  # slow import: only when something runs

    root = collection.root()
    path = playbook if isinstance(playbook, Path) else playbook_path(playbook)
    # ansible-runner would point the fact cache at this run's artifacts (a fresh, empty cache every run: facts
    # gathered at every provision). labctl keeps one cache across runs instead, like ansible.cfg's for
    # ansible-playbook (docs/performance.md), under its own cache directory.
    envvars = {
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache_dir() / "facts"),
    }
    if mitogen:
        envvars.update(mitogen_env())
    model = model or ProgressModel()
    ident = f"{time.strftime('%Y%m%d-%H%M%S')}-{path.stem}-{os.getpid()}"

    def handler(event: dict[str, Any]) -> bool:
        model.feed(event)
        if on_event is not None:
            on_event(event)
        return True  # keep the event in the artifacts

    ensure_tools_on_path()
    cmdline = "--check --diff" if check else None
    # A fresh private data dir per run (0700, removed afterwards): ansible-runner reads env/cmdline, env/extravars...
    # from it when they exist, so a shared one would turn every run after a `--check` into a check run.
    with tempfile.TemporaryDirectory(prefix="labctl-runner-") as private:
        artifacts = cache_dir() / "runner" / "artifacts" if keep_artifacts else Path(private) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        runner = ansible_runner.run(
            private_data_dir=private,
            artifact_dir=str(artifacts),
            project_dir=str(root),
            playbook=str(path),
            inventory=str(Path(inventory).expanduser().resolve()) if inventory else None,
            limit=limit or None,
            tags=tags or None,
            skip_tags=skip_tags or None,
            cmdline=cmdline,
            extravars=dict(extravars) if extravars else None,
            envvars=envvars,
            suppress_env_files=True,
            ident=ident,
            event_handler=handler,
            rotate_artifacts=keep_artifacts,
            fact_cache_type="ansible.cfg",  # anything but "jsonfile": ansible-runner leaves the cache settings alone
            quiet=True,
        )
    kept = artifacts / ident if keep_artifacts else None
    return RunResult(model=model, artifacts=kept, status=runner.status, rc=runner.rc)
