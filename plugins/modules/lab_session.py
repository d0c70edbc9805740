#!/usr/bin/python
# Copyright: metalab contributors
# Apache-2.0
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_session
short_description: Start, stop and list metalab runtimes (one per lab user) through metalab-guard
description:
  - A thin wrapper around C(metalab-guard) on the lab host (installed by the C(session_limits) role); the guard does
    the work, keeps the ledger and enforces the policy. Refusals (unknown user, a second runtime, a GPU runtime for a
    user without C(gpu) or on a host without GPUs, an exhausted budget) fail with the guard's message and change
    nothing.
  - O(state=started) and O(state=stopped) are idempotent; O(state=query), O(state=usage) and O(state=token) only read.
version_added: 0.1.0
author: metalab contributors
options:
  user:
    description: Lab user name (as in C(lab_users)). Required for started, stopped and token.
    type: str
  state:
    description:
      - C(started) - the user has a runtime (started when none runs).
      - C(stopped) - the user has none (stopped gracefully when one runs).
      - C(query) - list the runtimes of the host.
      - C(usage) - hours used per user and kind from the host's ledger.
      - C(token) - the user's runtime token (created on first use; root only).
    type: str
    choices: [started, stopped, query, usage, token]
    default: started
  gpu:
    description: Start a GPU runtime instead of a CPU one.
    type: bool
    default: false
  reason:
    description: End reason recorded in the ledger for O(state=stopped).
    type: str
    default: admin
  since:
    description: For O(state=usage), an ISO date/time or a duration back from now (V(7d)); default all time.
    type: str
  guard:
    description: Path of the metalab-guard command.
    type: path
    default: /usr/local/bin/metalab-guard
  config:
    description: Guard config file; default the guard's own (/etc/metalab/guard.json).
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Needs root on the lab host (C(become)).
"""

EXAMPLES = r"""
- name: Start alice's CPU runtime
  metalab.lab.lab_session:
    user: alice

- name: Stop it
  metalab.lab.lab_session:
    user: alice
    state: stopped

- name: What runs on this host
  metalab.lab.lab_session:
    state: query
  register: sessions
"""

RETURN = r"""
session:
  description: The user's session (metalab-guard's session object) for started; the stop result for stopped.
  returned: state is started or stopped
  type: dict
sessions:
  description: Runtimes open on the host (session objects).
  returned: always except state is token
  type: list
  elements: dict
usage:
  description: Usage report (since, until, usage rows of user, kind, seconds, hours, sessions).
  returned: state is usage
  type: dict
token:
  description: The user's runtime token.
  returned: state is token
  type: str
refused:
  description: True when the guard refused the request (nothing was changed).
  returned: failure
  type: bool
"""

import json  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

EXIT_REFUSED = 2


def guard_argv(params, *args):
    argv = [params["guard"]]
    if params.get("config"):
        argv += ["--config", params["config"]]
    return argv + list(args)


def run_guard(module, *args):
    rc, out, err = module.run_command(guard_argv(module.params, *args))
    if rc != 0:
        message = (err or out).strip().splitlines()
        text = message[-1] if message else f"metalab-guard failed with exit code {rc}"
        if text.startswith("metalab-guard: "):
            text = text[len("metalab-guard: ") :]
        module.fail_json(msg=text, rc=rc, refused=rc == EXIT_REFUSED, stderr=err)
    return out


def run_json(module, *args):
    out = run_guard(module, *args)
    try:
        return json.loads(out)
    except ValueError:
        module.fail_json(msg=f"metalab-guard {args[0]} printed something that is not JSON", stdout=out)
        raise  # unreachable; fail_json exits


def main():
    module = AnsibleModule(
        argument_spec=dict(
            user=dict(type="str"),
            state=dict(type="str", default="started", choices=["started", "stopped", "query", "usage", "token"]),
            gpu=dict(type="bool", default=False),
            reason=dict(type="str", default="admin"),
            since=dict(type="str"),
            guard=dict(type="path", default="/usr/local/bin/metalab-guard"),
            config=dict(type="path"),
        ),
        required_if=[
            ("state", "started", ["user"]),
            ("state", "stopped", ["user"]),
            ("state", "token", ["user"]),
        ],
        supports_check_mode=True,
    )
    state, user = module.params["state"], module.params["user"]

    if state == "token":
        token = run_guard(module, "token", user).strip()
        module.exit_json(changed=False, token=token)
    if state == "usage":
        args = ["usage", "--json"]
        if module.params["since"]:
            args += ["--since", module.params["since"]]
        module.exit_json(changed=False, usage=run_json(module, *args), sessions=run_json(module, "list", "--json"))

    sessions = run_json(module, "list", "--json")
    if state == "query":
        module.exit_json(changed=False, sessions=sessions)
    mine = next((s for s in sessions if s.get("user") == user), None)
    kind = "gpu" if module.params["gpu"] else "cpu"

    if state == "started":
        if mine is not None:
            if mine.get("kind") != kind:
                module.fail_json(
                    msg=f"{user} already has a {mine.get('kind')} runtime (session {mine.get('session')}); "
                    f"stop it before starting a {kind} runtime",
                    refused=True,
                )
            module.exit_json(changed=False, session=mine, sessions=sessions)
        if module.check_mode:
            module.exit_json(changed=True, session={"user": user, "kind": kind}, sessions=sessions)
        args = ["start", user, "--json"] + (["--gpu"] if module.params["gpu"] else [])
        session = run_json(module, *args)
        module.exit_json(changed=True, session=session, sessions=sessions + [session])

    # stopped
    if mine is None:
        # Ask the guard anyway when the name may be unknown, so a typo is an error rather than "nothing to do".
        if module.check_mode:
            module.exit_json(changed=False, session={"user": user, "stopped": False}, sessions=sessions)
        result = run_json(module, "stop", user, "--json", "--reason", module.params["reason"])
        module.exit_json(changed=bool(result.get("stopped")), session=result, sessions=sessions)
    if module.check_mode:
        module.exit_json(changed=True, session=mine, sessions=sessions)
    result = run_json(module, "stop", user, "--json", "--reason", module.params["reason"])
    module.exit_json(
        changed=bool(result.get("stopped")),
        session=result,
        sessions=[s for s in sessions if s.get("user") != user],
    )


if __name__ == "__main__":
    main()
