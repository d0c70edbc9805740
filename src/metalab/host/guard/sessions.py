"""Session operations (start, stop, extend, list, usage) and the guard and boot runs.

Every operation that changes something holds the guard lock (``fcntl.flock`` on ``config.lock``, in a directory only
root can write to). Start, stop, extend and boot wait for it (up to ``lock_timeout``). The cron-driven guard run waits
too (up to ``run_lock_wait``) and goes first: it announces itself on ``<lock>.gate`` before it waits, and a start or
stop does not take the lock while a guard run is announced, so a user who loops start/stop through the portal delays
enforcement only by the operations already under way (one per user through the broker). A run that still could not
take the lock is recorded (``guard.last-skip`` beside the ledger, a counter in the ledger's meta) for ``labctl
doctor`` and the metrics.

A start holds the guard lock only for its decisions (limits, budget, GPU, the ledger's ``starting`` row) and for
recording the outcome; the slow part in between (her token, socket tmpfs, ``podman run``) runs without it, so ten
users pressing Start at once do not queue behind each other's ``podman run``. During that part the start holds a
per-user start lock (``start-<user>.lock`` beside the guard lock). Whoever holds the guard lock and meets a
``starting`` row whose start lock is held knows the start is in progress, not crashed: reconcile leaves it alone, a
stop waits for it, a drain waits for every one of them. A start killed midway drops its start lock with its
process, and the next reconcile treats its row as before (promoted when its container runs, else closed).

This file is over 400 lines because Lab is one class on purpose: every operation that changes a runtime follows
the same lock, ledger and engine order (ledger row first, podman second, ledger again), and keeping start, stop,
reconcile and the guard run side by side keeps that crash-consistency reasoning in one place. The lock, the run
report and the drain are modules of their own.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import logging
import os
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from metalab.host.guard import drain, files, idle, runtime_status
from metalab.host.guard.config import Config, User
from metalab.host.guard.engine import (
    ContainerInfo,
    ContainerSpec,
    EngineError,
    NameInUse,
    PodmanEngine,
    container_name,
)
from metalab.host.guard.ledger import Ledger, LedgerError, Runtime
from metalab.host.guard.lock import GuardLock
from metalab.host.guard.policy import (
    KINDS,
    WINDOW,
    Interval,
    Policy,
    budget_left,
    deadline,
    due_warnings,
    format_clock,
    format_duration,
    format_iso,
    start_decision,
)
from metalab.host.guard.report import NOTICE_DIR, NOTICE_FILE, Failure, Refused, RunReport
from metalab.rules import USER_NAME

log = logging.getLogger("metalab.guard")

# Touched (mtime = the run's clock) at the end of every guard run, beside the ledger: `labctl doctor` reads its age.
LAST_RUN_FILE = "guard.last-run"
# Touched when a guard run gave up waiting for the lock: `labctl doctor` compares it with the last run.
LAST_SKIP_FILE = "guard.last-skip"


def last_run_path(ledger: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(ledger)), LAST_RUN_FILE)


def last_skip_path(ledger: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(ledger)), LAST_SKIP_FILE)


def _touch(path: str, now: float) -> None:
    try:
        with open(path, "a", encoding="utf-8"):
            pass
        os.utime(path, (now, now))
    except OSError as exc:  # markers are health signals only: never fail the operation for them
        log.warning("could not touch %s: %s", path, exc)


def make_engine(config: Config) -> PodmanEngine:
    return PodmanEngine(config.runtime)


class Lab:
    def __init__(
        self,
        config: Config,
        engine: Optional[PodmanEngine] = None,
        ledger: Optional[Ledger] = None,
        actor: str = "metalab-guard",
    ) -> None:
        self.config = config
        self.engine = engine or make_engine(config)
        self.ledger = ledger or Ledger(config.ledger)
        self.actor = actor
        self.lock = GuardLock(config.lock)
        self.gate = GuardLock(config.lock + ".gate")
        self._idle_state: Optional[Dict[str, Dict[str, Any]]] = None  # this guard run's idle findings (idle.py)

    def close(self) -> None:
        self.ledger.close()

    # -- helpers ------------------------------------------------------------------------------------------------

    def _locked(self, wait: Optional[float] = None) -> None:
        """Take the lock for an operation; a guard run that announced itself on the gate goes first."""
        wait = self.config.lock_timeout if wait is None else wait
        deadline_at = time.monotonic() + wait
        if not self.gate.acquire(wait, fcntl.LOCK_SH):
            raise Failure("the guard is enforcing session limits right now; try again in a moment")
        self.gate.release()
        if not self.lock.acquire(max(0.0, deadline_at - time.monotonic())):
            raise Failure(f"another metalab-guard holds {self.config.lock}; try again in a moment")

    def start_lock(self, user: str) -> GuardLock:
        if not USER_NAME.fullmatch(user):  # the name becomes part of a path in the root-only lock directory
            raise Refused(f"invalid user name {user!r}")
        return GuardLock(os.path.join(os.path.dirname(os.path.abspath(self.config.lock)), f"start-{user}.lock"))

    def start_in_progress(self, row: Runtime) -> bool:
        """Whether ROW is a start whose process is still at work (it holds the user's start lock)."""
        if row.state != "starting":
            return False
        probe = self.start_lock(row.user)
        if probe.acquire(0):
            probe.release()
            return False
        return True

    def wait_for_start(self, user: str, wait: float) -> bool:
        """Wait (without the guard lock) until no start of USER is at work; False when WAIT ran out first."""
        if user not in self.config.users:
            return True  # never started here: nothing to wait for (and no lock file made for a stray name)
        probe = self.start_lock(user)
        if probe.acquire(wait):
            probe.release()
            return True
        return False

    def wait_for_starts(self, wait: float) -> List[str]:
        """Wait for every start at work on the host (call without the guard lock); the users still starting."""
        deadline_at = time.monotonic() + wait
        late = []
        for row in self.ledger.open_runtimes():
            if row.state == "starting" and not self.wait_for_start(row.user, max(0.0, deadline_at - time.monotonic())):
                late.append(row.user)
        return late

    def policy_for(self, user: str) -> Policy:
        known = self.config.users.get(user)
        return known.policy if known else self.config.default_policy

    def _history(self, now: float) -> Dict[Tuple[str, str], List[Runtime]]:
        out: Dict[Tuple[str, str], List[Runtime]] = {}
        for row in self.ledger.sessions_since(now - WINDOW):
            out.setdefault((row.user, row.kind), []).append(row)
        return out

    @staticmethod
    def _intervals(rows: List[Runtime], exclude: Optional[int] = None) -> List[Interval]:
        return [Interval(r.started, r.ended) for r in rows if r.id != exclude]

    def _deadline(self, row: Runtime, history: Dict[Tuple[str, str], List[Runtime]], now: float):  # type: ignore[no-untyped-def]
        past = self._intervals(history.get((row.user, row.kind), []), exclude=row.id)
        return deadline(self.policy_for(row.user), row.kind, row.started, row.extended_seconds, past, now)

    def _describe(self, row: Runtime, history: Dict[Tuple[str, str], List[Runtime]], now: float) -> Dict[str, Any]:
        dl = self._deadline(row, history, now)
        rows = history.get((row.user, row.kind), [])
        left = budget_left(self.policy_for(row.user), row.kind, self._intervals(rows), now)
        return {
            "session": row.id,
            "user": row.user,
            "host": row.host,
            "kind": row.kind,
            "gpu": row.gpu,
            "state": row.state,
            "container": row.container,
            "started": format_iso(row.started),
            "deadline": format_iso(dl.stop_at),
            "stop_reason": dl.reason,
            "time_left_seconds": max(0, int(dl.stop_at - now)),
            "budget_left_seconds": None if left is None else int(left),
            "extended_seconds": row.extended_seconds,
            **self._idle_describe(row),
        }

    def _idle_describe(self, row: Runtime) -> Dict[str, Any]:
        """Idle timeout of the runtime's kind, and when the guard stops it for idleness if nothing happens (null:
        no timeout, or its activity is not known yet) as the latest guard run found it."""
        timeout = self.config.idle_timeout.get(row.kind)
        state = self._idle_state if self._idle_state is not None else idle.read_state(self._idle_path())
        since = (state.get(str(row.id)) or {}).get("since")
        stop_at = since + timeout if timeout is not None and isinstance(since, (int, float)) else None
        return {"idle_timeout_seconds": timeout, "idle_stop_at": format_iso(stop_at)}

    def _idle_path(self) -> str:
        return idle.state_path(self.config.ledger)

    def _release_files(self, user: str) -> None:
        """After a runtime is gone: its token opens nothing and its socket tmpfs is unmounted."""
        rt = self.config.runtime
        try:
            files.remove_token(rt.token_dir, user)
            files.unmount_socket_tmpfs(rt.socket_root, user)
        except (OSError, subprocess.SubprocessError) as exc:  # never keep a stop from being recorded
            log.warning("cleanup after the runtime of %s: %s", user, exc)

    # -- reconciliation -------------------------------------------------------------------------------------

    def _finish_stop(self, row: Runtime, now: float, report: Optional[RunReport] = None) -> None:
        self.engine.stop(row.container)
        self._release_files(row.user)
        if self.ledger.close_row(row.id, None, ended=now, now=now, actor=self.actor) and report is not None:
            report.finished.append(row.user)

    def reconcile(self, now: float, report: RunReport) -> Dict[str, ContainerInfo]:
        """Finish interrupted stops and starts, close rows of crashed runtimes, remove containers without a row.

        The order matters while starts run their podman run without the guard lock: the open rows first, then which
        of them are starts at work, then the containers. A row that is not at work by then has its container (if
        it is alive) in the listing that follows; listing first could miss a container whose start finished just
        after, and take it for a crash. (No row opens meanwhile: inserts happen under the guard lock, which every
        caller of reconcile holds; a container whose row is open anyway is still left alone.)"""
        open_rows = self.ledger.open_runtimes()
        at_work = {row.id for row in open_rows if self.start_in_progress(row)}
        containers = self.engine.list()
        for row in open_rows:
            info = containers.get(row.container)
            ours = info is not None and info.session == row.id
            if row.id in at_work:
                continue  # its podman run is under way; the start records the outcome itself
            try:
                if row.state == "stopping":
                    self._finish_stop(row, now, report)
                elif ours and info is not None and info.running:
                    if row.state == "starting" and self.ledger.mark_running(
                        row.id, now, self.actor, recovered=True
                    ):  # the start was killed after podman run
                        report.promoted.append(row.user)
                else:
                    # The container exited or is gone: a crash (or a start killed before podman run finished).
                    if ours:
                        self.engine.remove(row.container)
                    self._release_files(row.user)
                    state = info.state if ours and info is not None else "gone"
                    if self.ledger.close_row(
                        row.id, "crash", ended=now, now=now, actor=self.actor, container_state=state, phase=row.state
                    ):
                        report.crashed.append(row.user)
                        log.warning("runtime of %s (session %d) crashed: container %s", row.user, row.id, state)
            except EngineError as exc:
                report.errors.append(f"{row.user}: {exc}")
                log.error("%s: %s", row.user, exc)
        open_ids = {r.id for r in open_rows}
        for name, info in containers.items():
            if info.session in open_ids:
                continue  # handled above (still running, or its stop failed and is retried next run)
            if info.session is not None:
                newer = self.ledger.get(info.session)
                if newer is not None and newer.ended is None:
                    continue  # defensive: never stop a container whose row is open
            try:
                self.engine.stop(name)
            except EngineError as exc:
                report.errors.append(f"{name}: {exc}")
                continue
            report.orphans.append(name)
            self.ledger.record_event(
                now, None, info.labels.get("metalab.user"), "orphan-removed", self.actor,
                container=name, session_label=info.labels.get("metalab.session"),
            )  # fmt: skip
            log.warning("removed container %s: no open ledger row", name)
        return containers

    # -- operations -----------------------------------------------------------------------------------------

    def _user(self, name: str) -> User:
        user = self.config.users.get(name)
        if user is None:
            raise Refused(f"unknown user {name!r}: not a lab user on {self.config.host}")
        return user

    def start(self, name: str, kind: str, now: Optional[float] = None) -> Dict[str, Any]:
        if kind not in KINDS:
            raise Refused(f"unknown runtime kind {kind!r}; use cpu or gpu")
        user = self._user(name)
        if kind == "gpu":
            if not user.gpu:
                raise Refused(f"{name} may not start GPU runtimes (users.{name}.gpu is false)")
            if not self.config.runtime.gpus:
                raise Refused(f"host {self.config.host} has no GPUs")
        start_lock = self.start_lock(name)
        self._locked()
        try:
            # Checked under the lock: once `metalab-guard drain` has set its file, no new start slips through (and
            # the drain waits for the starts that were already past this point).
            draining = drain.read(self.config.drain_file)
            if draining is not None:
                raise Refused(drain.refusal(self.config.host, draining))
            now = time.time() if now is None else now
            if self._start_needs_reconcile(user, kind):
                # Frees her crashed or half-stopped runtime and GPUs of crashed ones; errors are retried by the guard.
                self.reconcile(now, RunReport())
            row = self._reserve(user, kind, now, start_lock)
        finally:
            self.lock.release()
        try:
            return self._launch(user, row, now)
        finally:
            start_lock.release()

    def _start_needs_reconcile(self, user: User, kind: str) -> bool:
        """Whether reconciling first could change this start's outcome: she has an open row (a crashed runtime, a stop
        or start killed midway) or it needs a GPU and none is free (one may belong to a crashed runtime). Otherwise
        the start skips it and its ``podman ps`` (docs/performance.md); the guard run reconciles every minute, and a
        leftover container of her name without an open row is removed by ``_launch``."""
        if self.ledger.open_for_user(user.name) is not None:
            return True
        return kind == "gpu" and not self.free_gpus()

    def free_gpus(self, open_rows: Optional[List[Runtime]] = None) -> List[int]:
        rows = self.ledger.open_runtimes() if open_rows is None else open_rows
        busy = {r.gpu for r in rows if r.gpu is not None}
        return [g for g in self.config.runtime.gpus if g not in busy]

    def _reserve(self, user: User, kind: str, now: float, start_lock: GuardLock) -> Runtime:
        """Phase one of a start, under the guard lock: every decision, then the ``starting`` row, with the user's
        start lock held from here until the start has recorded its outcome."""
        existing = self.ledger.open_for_user(user.name)
        if existing is not None and existing.state == "stopping":
            raise Refused(f"the previous runtime of {user.name} is still stopping; try again in a minute")
        if existing is not None:
            raise Refused(
                f"{user.name} already has a {existing.kind} runtime (session {existing.id}, "
                f"started {format_clock(existing.started)} UTC); stop it first"
            )
        history = self._history(now)
        decision = start_decision(user.policy, kind, self._intervals(history.get((user.name, kind), [])), now)
        if not decision.allowed:
            raise Refused(f"cannot start a {kind} runtime for {user.name}: {decision.message}")
        gpu: Optional[int] = None
        if kind == "gpu":
            free = self.free_gpus()
            if not free:
                total = len(self.config.runtime.gpus)
                raise Refused(f"no GPU runtime available right now ({total} of {total} in use)")
            gpu = free[0]
        name = container_name(user.name)
        if not start_lock.acquire(0):  # only a start killed between its insert and here could hold it; it is gone
            raise Refused(f"a start of {user.name}'s runtime is in progress; try again in a moment")
        try:
            return self.ledger.insert_starting(user.name, self.config.host, kind, gpu, name, now, self.actor)
        except LedgerError as exc:
            start_lock.release()
            raise Refused(str(exc)) from None
        except BaseException:
            start_lock.release()
            raise

    def _launch(self, user: User, row: Runtime, now: float) -> Dict[str, Any]:
        """Phase two, without the guard lock (the user's start lock keeps reconcile, stop and drain off this row):
        her token and socket tmpfs, ``podman run``, then the outcome in the ledger."""
        kind, gpu, name = row.kind, row.gpu, row.container
        env_file: Optional[str] = None
        try:
            rt = self.config.runtime
            token = files.new_token(rt.token_dir, user.name)  # a new token at every start
            frontdoor_gid = files.group_id(rt.frontdoor_group)
            sockdir = files.ensure_socket_dir(rt.socket_root, user.name, user.uid, frontdoor_gid)
            files.mount_socket_tmpfs(sockdir, user.uid, frontdoor_gid, rt.socket_dir_size, rt.selinux)
            env = dict(rt.env)
            # METALAB_USER: the runtime serves JupyterLab under the front door's /user/<name>/ (its base_url).
            env.update(
                {
                    rt.token_env: token,
                    "HOME": "/home/studio-lab-user",
                    "METALAB_SESSION": str(row.id),
                    "METALAB_USER": user.name,
                }
            )
            env_file = files.write_env_file(rt.env_dir, user.name, env)
            spec = ContainerSpec(
                name=name,
                user=user.name,
                uid=user.uid,
                gid=user.gid,
                home=user.home,
                sockdir=sockdir,
                kind=kind,
                gpu=gpu,
                session=row.id,
                env_file=env_file,
            )
            try:
                container_id = self.engine.start(spec)
            except NameInUse:
                # A container of her name that no open row owns (hers is the only open row: checked under the guard
                # lock, and her start lock is ours): an orphan the guard run would remove. Remove it, start once more.
                log.warning("removing container %s before starting %s's runtime: no open ledger row", name, user.name)
                self.engine.stop(name)
                self.ledger.record_event(now, None, user.name, "orphan-removed", self.actor, container=name)
                container_id = self.engine.start(spec)
        except (EngineError, files.FileError, OSError) as exc:
            try:
                self.engine.remove(name)
            except EngineError as rm_exc:
                log.error("cleanup after failed start of %s: %s", user.name, rm_exc)
            self._release_files(user.name)
            self.ledger.close_row(row.id, "start-failed", ended=now, now=now, actor=self.actor, error=str(exc))
            raise Failure(f"starting a {kind} runtime for {user.name} failed: {exc}") from None
        finally:
            files.remove_quietly(env_file)
        self.ledger.mark_running(row.id, now, self.actor, container_id=container_id[:12], gpu=gpu)
        log.info("started %s runtime for %s (session %d, gpu %s)", kind, user.name, row.id, gpu)
        started = self.ledger.get(row.id)
        assert started is not None
        runtime_status.publish(self, started, now)
        return self._describe(started, self._history(now), now)

    def _stop_row(self, row: Runtime, reason: str, now: float) -> bool:
        """Two-phase stop: record the reason, stop the container, close the row. Idempotent."""
        self.ledger.mark_stopping(row.id, reason, now, self.actor)
        self.engine.stop(row.container)
        self._release_files(row.user)
        closed = self.ledger.close_row(row.id, None, ended=now, now=now, actor=self.actor)
        if closed:
            log.info("stopped runtime of %s (session %d): %s", row.user, row.id, reason)
        return closed

    def stop(self, name: str, reason: str = "admin", now: Optional[float] = None) -> Dict[str, Any]:
        # A start of hers at work (its podman run under way) finishes first; the stop then stops what it started.
        # The wait happens without the guard lock: the start never needs it again.
        if not self.wait_for_start(name, self.config.lock_timeout):
            raise Failure(f"a start of {name}'s runtime is still in progress; try again in a moment")
        self._locked()
        try:
            now = time.time() if now is None else now
            row = self.ledger.open_for_user(name)
            if row is not None and self.start_in_progress(row):  # a new start slipped in between: it is hers
                raise Failure(f"a start of {name}'s runtime is in progress; try again in a moment")
            if row is None:
                if name not in self.config.users:
                    raise Refused(f"unknown user {name!r}: not a lab user on {self.config.host}")
                return {"user": name, "stopped": False, "message": f"{name} has no runtime running"}
            try:
                self._stop_row(row, reason, now)
            except EngineError as exc:
                raise Failure(f"stopping the runtime of {name} failed (the next guard run retries): {exc}") from None
            final = self.ledger.get(row.id)
            assert final is not None
            return {
                "user": name,
                "stopped": True,
                "session": row.id,
                "kind": row.kind,
                "gpu": row.gpu,
                "reason": final.end_reason,
                "started": format_iso(row.started),
                "ended": format_iso(final.ended),
            }
        finally:
            self.lock.release()

    def extend(self, name: str, seconds: int, now: Optional[float] = None) -> Dict[str, Any]:
        if seconds <= 0:
            raise Refused("an extension must be longer than zero")
        self._user(name)
        self._locked()
        try:
            now = time.time() if now is None else now
            row = self.ledger.open_for_user(name)
            if row is None or row.state not in ("starting", "running"):
                raise Refused(f"{name} has no runtime running")
            row = self.ledger.add_extension(row.id, seconds, now, self.actor)
            log.info("extended runtime of %s (session %d) by %ds", name, row.id, seconds)
            return self._describe(row, self._history(now), now)
        finally:
            self.lock.release()

    def status(self, now: Optional[float] = None) -> List[Dict[str, Any]]:
        now = time.time() if now is None else now
        history = self._history(now)
        return [self._describe(row, history, now) for row in self.ledger.open_runtimes()]

    def usage(self, since: float, now: Optional[float] = None) -> List[Dict[str, Any]]:
        """Seconds used per user and kind in [since, now] (running sessions count up to now)."""
        now = time.time() if now is None else now
        totals: Dict[Tuple[str, str], List[float]] = {}
        for row in self.ledger.sessions_since(since):
            end = now if row.ended is None else min(row.ended, now)
            seconds = max(0.0, end - max(row.started, since))
            acc = totals.setdefault((row.user, row.kind), [0.0, 0])
            acc[0] += seconds
            acc[1] += 1
        return [
            {"user": u, "kind": k, "seconds": int(s), "hours": round(s / 3600, 2), "sessions": int(n)}
            for (u, k), (s, n) in sorted(totals.items())
        ]

    # -- guard and boot -------------------------------------------------------------------------------------

    def _warn(self, row: Runtime, offsets: List[int], stop_at: float, reason: str, now: float) -> bool:
        user = self.config.users.get(row.user)
        if reason == "idle":
            message = (
                f"metalab: your {row.kind} runtime is idle and stops in {format_duration(stop_at - now)} "
                f"(at {format_clock(stop_at)} UTC). Any activity keeps it running: running code, typing in a "
                "terminal, an open notebook. Save your work now."
            )
        else:
            what = "session limit" if reason == "limit" else "daily budget"
            message = (
                f"metalab: your {row.kind} runtime stops in {format_duration(stop_at - now)} "
                f"(at {format_clock(stop_at)} UTC, {what}). Save your work now."
            )
        delivered = False
        if user is not None:
            try:
                files.write_user_file(user.home, user.uid, user.gid, NOTICE_DIR, NOTICE_FILE, message + "\n")
                delivered = True
            except (OSError, files.FileError) as exc:
                log.warning("notice file for %s: %s", row.user, exc)
            # Idle warnings are not written to her terminals: that is output jupyter_server counts as terminal
            # activity when a browser is attached, so the warning would reset the idle clock it announces.
            if reason != "idle":
                if self.engine.notify(row.container, user.uid, user.gid, message):
                    delivered = True
                else:
                    log.warning("could not write the warning to the terminals of %s", row.container)
        if not delivered:
            return False
        if reason == "idle":
            # Idle warnings belong to one idle period (idle.py's state), not to the row's deadline warnings.
            self.ledger.record_event(now, row.id, row.user, "warned", self.actor, offsets=list(offsets),
                                     message=message, reason="idle")  # fmt: skip
        else:
            self.ledger.record_warnings(row.id, offsets, now, self.actor, message)
        runtime_status.publish(self, row, now)  # the warning reaches her JupyterLab page too
        log.info("warned %s: %s", row.user, message)
        return True

    def run(self, now: Optional[float] = None) -> RunReport:
        """One guard run: reconcile, warn, stop what is past its limit or budget."""
        report = RunReport()
        # Asking the runtimes whether they are idle takes up to idle.PROBE_TIMEOUT each (a JupyterLab that is busy
        # starting may not answer at once): all at once, and before the lock, so that starts and stops never wait
        # for it. A runtime that starts meanwhile is not in it: its activity is unknown this run (never idle).
        activities = self._probe_activity()
        wait = self.config.run_lock_wait
        deadline_at = time.monotonic() + wait
        if not self.gate.acquire(wait):
            return self._skipped(report, now)
        try:
            if not self.lock.acquire(max(0.0, deadline_at - time.monotonic())):
                return self._skipped(report, now)
        finally:
            self.gate.release()  # announced long enough: the lock is ours (or the run is given up)
        try:
            now = time.time() if now is None else now
            self.reconcile(now, report)
            history = self._history(now)
            idle_before = idle.read_state(self._idle_path())
            idle_now: Dict[str, Dict[str, Any]] = {}
            for row in self.ledger.open_runtimes():
                if row.state != "running":
                    continue
                dl = self._deadline(row, history, now)
                try:
                    if now >= dl.stop_at:
                        if self._stop_row(row, dl.reason, now):
                            report.stopped.append((row.user, dl.reason))
                        continue
                    due = due_warnings(dl.stop_at - now, self.policy_for(row.user).warnings, row.warnings_sent)
                    if due:
                        self._warn(row, due, dl.stop_at, dl.reason, now)
                        report.warned.append(row.user)
                    self._check_idle(row, now, report, idle_before, idle_now, activities)
                except EngineError as exc:
                    report.errors.append(f"{row.user}: {exc}")
                    log.error("%s: %s", row.user, exc)
            self._save_idle(idle_now)
            runtime_status.publish_all(self, now)  # after the idle state: her status file shows the idle stop too
            self.ledger.set_meta("last_run", repr(now))
            self._mark_last_run(now)
            return report
        finally:
            self.lock.release()

    def _probe_one(self, row: Runtime) -> Optional[idle.Activity]:
        rt = self.config.runtime
        user = self.config.users.get(row.user)
        try:
            if user is None:
                raise idle.ProbeError(f"{row.user} is not a lab user of this host any more")
            return idle.probe_runtime(rt.socket_root, rt.token_dir, row.user, user.uid)
        except idle.ProbeError as exc:  # not listening yet, or not answering: never idle on missing information
            log.debug("activity of %s unknown: %s", row.user, exc)
            return None

    def _probe_activity(self) -> Dict[int, Optional[idle.Activity]]:
        """Each running runtime's activity (None: unknown), keyed by session; the runtimes asked in parallel."""
        rows = [
            r
            for r in self.ledger.open_runtimes()
            if r.state == "running" and self.config.idle_timeout.get(r.kind) is not None
        ]
        if not rows:
            return {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(rows))) as pool:
            return dict(zip([r.id for r in rows], pool.map(self._probe_one, rows)))

    def _check_idle(
        self,
        row: Runtime,
        now: float,
        report: RunReport,
        before: Dict[str, Any],
        after: Dict[str, Any],
        activities: Dict[int, Optional[idle.Activity]],
    ) -> None:
        """Warn, then stop (reason idle), a runtime whose JupyterLab reports no activity for the idle timeout."""
        timeout = self.config.idle_timeout.get(row.kind)
        if timeout is None:
            return
        activity = activities.get(row.id)
        since = idle.idle_since(row.started, activity, now)
        key = str(row.id)
        previous = before.get(key) or {}
        warned = [int(o) for o in previous.get("warned", [])] if previous.get("since") == since else []
        after[key] = {"since": since, "warned": warned}
        if since is None:
            return
        stop_at = since + timeout
        if now >= stop_at:
            if self._stop_row(row, "idle", now):
                report.stopped.append((row.user, "idle"))
            after.pop(key, None)
            return
        # Only a runtime idle now is warned, and only at offsets shorter than the timeout: an offset as long as the
        # timeout would come due at every run while she works (each activity starts a new idle period).
        offsets = [o for o in self.policy_for(row.user).warnings if o < timeout]
        due = due_warnings(stop_at - now, offsets, warned) if since < now else []
        if due and self._warn(row, due, stop_at, "idle", now):
            after[key]["warned"] = sorted(set(warned) | set(due), reverse=True)
            report.warned.append(row.user)

    def _save_idle(self, state: Dict[str, Dict[str, Any]]) -> None:
        self._idle_state = state
        try:
            idle.write_state(self._idle_path(), state)
        except OSError as exc:  # only status and the next run's warnings read it: never fail the run for it
            log.warning("could not write %s: %s", self._idle_path(), exc)

    def _mark_last_run(self, now: float) -> None:
        _touch(last_run_path(self.config.ledger), now)

    def _skipped(self, report: RunReport, now: Optional[float]) -> RunReport:
        """The lock stayed busy for run_lock_wait: say so where doctor and the metrics look, and in the log."""
        now = time.time() if now is None else now
        report.skipped = True
        report.errors.append(
            f"the guard lock {self.config.lock} stayed busy for {self.config.run_lock_wait:.0f}s: this run enforced "
            "nothing (the next one tries again)"
        )
        _touch(last_skip_path(self.config.ledger), now)
        try:
            count = int(self.ledger.meta("skipped_runs") or 0) + 1
            self.ledger.set_meta("skipped_runs", str(count))
            self.ledger.set_meta("last_skipped", repr(now))
        except (LedgerError, ValueError) as exc:
            log.warning("could not count the skipped run: %s", exc)
        log.error("%s", report.errors[-1])
        return report

    def boot(self, now: Optional[float] = None) -> RunReport:
        """At boot: close every open row (reason host-restart) and remove leftover containers.

        The end time is the last guard run before the restart (the guard runs every minute), not the boot time,
        so a host that was down does not eat into users' budgets.
        """
        report = RunReport()
        self._locked()
        try:
            now = time.time() if now is None else now
            last = self.ledger.meta("last_run")
            last_seen = float(last) if last else now
            for row in self.ledger.open_runtimes():
                try:
                    self.ledger.mark_stopping(row.id, "host-restart", now, self.actor)
                    self.engine.stop(row.container)
                    self._release_files(row.user)
                except EngineError as exc:
                    report.errors.append(f"{row.user}: {exc}")
                    continue
                ended = min(now, max(row.started, last_seen))
                if self.ledger.close_row(row.id, "host-restart", ended=ended, now=now, actor=self.actor):
                    report.stopped.append((row.user, "host-restart"))
            self.reconcile(now, report)  # leftover containers of closed rows are orphans now
            self.ledger.set_meta("last_run", repr(now))
            return report
        finally:
            self.lock.release()
