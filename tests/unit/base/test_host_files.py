"""host_files on a real temporary tree: write, idempotence, check mode, lines, refusals, and base's helpers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.metalab.lab.plugins.filter.host_files import ca_certificate_files, copy_files
from ansible_collections.metalab.lab.plugins.modules import host_files

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
ME = {"owner": str(os.getuid()), "group": str(os.getgid())}  # tests need not run as root


@pytest.fixture
def run(run_module):
    def call(files, check=False, diff=True):
        return run_module(host_files.main, {"files": files, "_ansible_check_mode": check, "_ansible_diff": diff})

    return call


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def entries(tmp_path):
    return [
        {"path": str(tmp_path / "conf.d"), "state": "directory", "mode": "0750", **ME},
        {"path": str(tmp_path / "conf.d" / "a.conf"), "content": "a = 1\n", "mode": "0640", **ME},
        {"path": str(tmp_path / "b.conf"), "content": "b\n", **ME},
    ]


def test_writes_then_changes_nothing_on_rerun(run, tmp_path):
    first = run(entries(tmp_path))
    assert not first.failed, first.result
    assert first.result["changed"] is True
    assert first.result["changed_paths"] == [str(tmp_path / p) for p in ("conf.d", "conf.d/a.conf", "b.conf")]
    assert (tmp_path / "conf.d" / "a.conf").read_text() == "a = 1\n"
    assert mode_of(tmp_path / "conf.d") == 0o750
    assert mode_of(tmp_path / "conf.d" / "a.conf") == 0o640
    assert mode_of(tmp_path / "b.conf") == 0o644  # the default

    again = run(entries(tmp_path))
    assert again.result["changed"] is False
    assert again.result["changed_paths"] == []
    assert again.result["diff"] == []
    assert not list(tmp_path.glob("**/.metalab-*")), "temporary files left behind"


def test_drift_in_content_or_mode_is_repaired_and_reported(run, tmp_path):
    run(entries(tmp_path))
    (tmp_path / "b.conf").write_text("edited by hand\n")
    os.chmod(tmp_path / "conf.d" / "a.conf", 0o666)
    out = run(entries(tmp_path))
    assert out.result["changed_paths"] == [str(tmp_path / "conf.d" / "a.conf"), str(tmp_path / "b.conf")]
    assert (tmp_path / "b.conf").read_text() == "b\n"
    assert mode_of(tmp_path / "conf.d" / "a.conf") == 0o640
    diff = [d for d in out.result["diff"] if d.get("before_header") == str(tmp_path / "b.conf")]
    assert diff and diff[0]["before"] == "edited by hand\n" and diff[0]["after"] == "b\n"


def test_check_mode_reports_and_writes_nothing(run, tmp_path):
    out = run(entries(tmp_path), check=True)
    assert out.result["changed"] is True
    assert len(out.result["changed_paths"]) == 3
    assert list(tmp_path.iterdir()) == []
    run(entries(tmp_path))
    (tmp_path / "b.conf").write_text("drift\n")
    out = run(entries(tmp_path), check=True)
    assert out.result["changed_paths"] == [str(tmp_path / "b.conf")]
    assert (tmp_path / "b.conf").read_text() == "drift\n"


def test_absent_removes_files_but_never_directories(run, tmp_path):
    (tmp_path / "old.conf").write_text("x\n")
    out = run([{"path": str(tmp_path / "old.conf"), "state": "absent", "content": "ignored"}])
    assert out.result["changed_paths"] == [str(tmp_path / "old.conf")]
    assert not (tmp_path / "old.conf").exists()
    assert run([{"path": str(tmp_path / "old.conf"), "state": "absent"}]).result["changed"] is False

    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "data").write_text("user data\n")
    out = run([{"path": str(tmp_path / "keep"), "state": "absent"}])
    assert out.failed and "never removes directories" in out.result["msg"]
    assert (tmp_path / "keep" / "data").read_text() == "user data\n"


def test_only_if_false_drops_the_entry(run, tmp_path):
    dropped = run([{"path": "", "state": "absent", "only_if": False}])  # e.g. no default site on this platform
    assert not dropped.failed and dropped.result["changed"] is False
    out = run([{"path": str(tmp_path / "x"), "content": "x\n", "only_if": False, **ME}])
    assert out.result["changed"] is False
    assert not (tmp_path / "x").exists()


PAM = "#%PAM-1.0\n@include common-auth\n@include common-account\nsession required pam_loginuid.so\n"


def test_line_is_inserted_once_after_the_anchor_and_keeps_the_file_mode(run, tmp_path):
    pam = tmp_path / "cron"
    pam.write_text(PAM)
    os.chmod(pam, 0o640)  # not 0600: the temporary file is made 0600
    entry = {
        "path": str(pam),
        "state": "line",
        "line": "account    required   pam_access.so",
        "regexp": r"^account\s+required\s+pam_access.so",
        "insertafter": "^@include common-account",
    }
    assert run([entry]).result["changed"] is True
    lines = pam.read_text().splitlines()
    assert lines[3] == "account    required   pam_access.so"
    assert lines[2] == "@include common-account" and lines[4] == "session required pam_loginuid.so"
    assert mode_of(pam) == 0o640
    assert run([entry]).result["changed"] is False
    assert pam.read_text().count("pam_access") == 1


def test_line_replaces_the_last_match_and_bof_inserts_at_the_top(run, tmp_path):
    conf = tmp_path / "access.conf"
    conf.write_text("# access.conf\n-:labusers:cron\n+:ALL:ALL\n")
    entry = {
        "path": str(conf),
        "state": "line",
        "line": "-:labusers:cron crond",
        "regexp": "^-:labusers:cron",
        "insertbefore": "BOF",
    }
    assert run([entry]).result["changed"] is True
    assert conf.read_text() == "# access.conf\n-:labusers:cron crond\n+:ALL:ALL\n"
    conf.write_text("+:ALL:ALL")  # no final newline
    run([entry])
    assert conf.read_text() == "-:labusers:cron crond\n+:ALL:ALL"


def test_line_in_a_missing_file_fails(run, tmp_path):
    out = run([{"path": str(tmp_path / "nope"), "state": "line", "line": "x"}])
    assert out.failed and "does not exist" in out.result["msg"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "relative/x", "content": ""}, "absolute path"),
        ({"path": "/", "state": "directory"}, "absolute path"),
        ({"path": "/etc/x", "state": "link"}, "state must be one of"),
        ({"path": "/etc/x"}, "content (text) is required"),
        ({"path": "/etc/x", "content": "", "mode": "644x"}, "mode must be octal"),
        ({"path": "/etc/x", "content": "", "line": "y"}, "line not allowed with state=file"),
        ({"path": "/etc/x", "state": "line", "line": "a\nb"}, "one line of text"),
        ({"path": "/etc/x", "state": "line", "line": "a", "regexp": "("}, "not a regular expression"),
        ({"path": "/etc/x", "state": "line", "line": "a", "insertafter": "x", "insertbefore": "y"}, "not both"),
        ({"path": "/etc/x", "content": "", "only_if": "maybe"}, "only_if must be true or false"),
        ({"path": "/etc/x", "content": "", "validate": "true"}, "validate must be a command with %s"),
    ],
)
def test_bad_entries_are_refused_by_name_before_any_change(run, tmp_path, entry, message):
    good = {"path": str(tmp_path / "first.conf"), "content": "first\n", **ME}
    out = run([good, entry])
    assert out.failed
    assert message in out.result["msg"]
    assert out.result["msg"].startswith("files[1]")
    assert not (tmp_path / "first.conf").exists(), "an earlier entry was written before the bad one was seen"


def test_validate_installs_only_content_the_command_accepts(run, tmp_path):
    """validate (like template's): the command sees the new content beside the file, a refusal keeps the old one."""
    conf = tmp_path / "app.conf"
    # The check accepts files whose first line is "ok" and records which file it was shown.
    check = f"/bin/sh -c 'echo $1 >> {tmp_path}/seen; head -n1 $1 | grep -qx ok' sh %s"
    good = {"path": str(conf), "content": "ok\nsetting = 1\n", "validate": check, **ME}
    first = run([good])
    assert not first.failed, first.result
    assert conf.read_text() == "ok\nsetting = 1\n"
    shown = (tmp_path / "seen").read_text().split()
    assert len(shown) == 1 and os.path.dirname(shown[0]) == str(tmp_path) and shown[0] != str(conf)

    again = run([good])
    assert again.result["changed"] is False
    assert len((tmp_path / "seen").read_text().split()) == 1, "validate ran although nothing changed"

    bad = run([dict(good, content="broken\n")])
    assert bad.failed and str(conf) in bad.result["msg"] and "validation" in bad.result["msg"]
    assert conf.read_text() == "ok\nsetting = 1\n", "refused content was installed"
    assert not list(tmp_path.glob(".metalab-*")), "temporary file left behind"


def test_duplicate_paths_are_refused(run, tmp_path):
    path = str(tmp_path / "x")
    out = run([{"path": path, "content": "1", **ME}, {"path": path + "/", "content": "2", **ME}])
    assert out.failed and "the same path as files[0]" in out.result["msg"]


def test_ca_certificate_files_names_and_checks_the_certificates():
    got = ca_certificate_files(["/a/corp-root.crt", "/b/proxy.pem"], [PEM, PEM], "/usr/local/share/ca-certificates/")
    assert [e["path"] for e in got] == [
        "/usr/local/share/ca-certificates/metalab-corp-root.crt",
        "/usr/local/share/ca-certificates/metalab-proxy.crt",
    ]
    assert all(e["content"] == PEM and e["mode"] == "0644" for e in got)
    with pytest.raises(AnsibleFilterError, match="/x/key.pem is not a PEM certificate"):
        ca_certificate_files(["/x/key.pem"], ["-----BEGIN PRIVATE KEY-----\n"], "/ca")
    with pytest.raises(AnsibleFilterError, match="would both be installed as metalab-root.crt"):
        ca_certificate_files(["/a/root.crt", "/b/root.pem"], [PEM, PEM], "/ca")


def test_copy_files_keeps_the_tree_below_the_source_root():
    got = copy_files(
        ["/c/src/metalab/broker/a.py", "/c/src/metalab/portal/static/x.css"],
        ["a\n", "x\n"],
        "/c/src/metalab/",
        "/opt/metalab/lib/metalab",
        "0640",
    )
    assert got == [
        {"path": "/opt/metalab/lib/metalab/broker/a.py", "content": "a\n", "mode": "0640"},
        {"path": "/opt/metalab/lib/metalab/portal/static/x.css", "content": "x\n", "mode": "0640"},
    ]
    with pytest.raises(AnsibleFilterError, match="/etc/passwd is not under /c/src"):
        copy_files(["/etc/passwd"], ["root"], "/c/src", "/opt")
    with pytest.raises(AnsibleFilterError, match="2 sources but 1 contents"):
        copy_files(["/c/src/a", "/c/src/b"], ["a"], "/c/src", "/opt")


def test_copy_files_mode_per_file_and_a_mode_for_no_file_is_refused():
    got = copy_files(["Containerfile", "start-jupyterlab"], ["FROM x\n", "#!/bin/sh\n"], "", "/ctx", modes={
        "start-jupyterlab": "0755"
    })  # fmt: skip
    assert [(e["path"], e["mode"]) for e in got] == [("/ctx/Containerfile", "0644"), ("/ctx/start-jupyterlab", "0755")]
    with pytest.raises(AnsibleFilterError, match="modes name start-jupyter, not among the sources"):
        copy_files(["start-jupyterlab"], ["#!/bin/sh\n"], "", "/ctx", modes={"start-jupyter": "0755"})


# -- resolve_lab_users never reaches the host ---------------------------------------------------------------------

ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def adhoc(args, module="metalab.lab.resolve_lab_users"):
    # A host whose Python does not exist: any module run on it fails, so a success came from the controller.
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    out = subprocess.run(
        [ANSIBLE, "all", "-i", "nohost,", "-c", "local", "-e", "ansible_python_interpreter=/nonexistent/python3"]
        + ["-m", module, "-a", json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert "nohost | " in out.stdout, out.stdout + out.stderr
    result = json.loads(out.stdout[out.stdout.index("=> ") + 3 :])
    result["failed"] = "nohost | FAILED" in out.stdout  # the status is on the line, not in the result
    return result


def test_lab_users_resolution_runs_on_the_controller():
    ok = adhoc({"users": [{"name": "alice", "quota": "2G"}]})
    assert not ok.get("failed"), ok
    (alice,) = ok["ansible_facts"]["lab_users_resolved"]
    assert alice["login"] == "lab-alice" and alice["quota_bytes"] == 2 * 2**30
    assert alice["home"] == "/srv/metalab/homes/alice"

    bad = adhoc({"users": [{"name": "alice"}, {"name": "Bob!"}]})
    assert bad["failed"] and "lab_users[1] (name 'Bob!')" in bad["msg"] and "nothing changed" in bad["msg"]

    # The lab_users module itself runs on the host, here one without Python: proof of the split.
    real = adhoc({"users": [alice]}, module="metalab.lab.lab_users")
    assert real["failed"] and "nonexistent" in json.dumps(real)
