"""GPU runtimes on a simulated two-GPU host (issue 18): the runtime path sees what it would see on a GPU host.

The module fixture turns the converged sandbox into a GPU host as far as the runtime path can tell: character device
nodes named as the NVIDIA driver creates them (nodes of /dev/null and /dev/zero, which every kernel has), owned
root:metalab-gpu mode 0660 as roles/nvidia_driver makes them, the group created as that role creates it, and a CDI spec
in the shape `nvidia-ctk cdi generate` writes (fixtures/cdi-nvidia-2gpu.yaml) at /etc/cdi/nvidia.yaml. Then
session_limits renders guard.json for GPUs 0 and 1 on that host (`site.yml --tags session_limits`). No product code
is told that the GPUs are simulated. Everything is undone afterwards: nodes, spec, group, guard.json.

Found here (Debian 12, podman 4.3.1, crun 1.8.1): the issue's fear, that a runtime cannot open its GPU because the
node keeps the host's root:metalab-gpu 0660, does not hold. podman gives every device of a container started with
--user UID:GID to that uid and gid (its OCI spec names them, with no mode, and crun creates such nodes 0666); the first
test pins that. A spec that names owner and mode (the CDI format allows it) makes podman keep them: for that case GPU
runtimes get the device group as a supplementary group (guard.json runtime.gpu_groups, rendered by session_limits
from the host), tested with such a spec. What a simulated GPU cannot show: that CUDA works (no driver, no libraries,
no nvidia-cdi-hook); docs/gpu.md.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ok, requirement_missing, root, write_root_file

ROOT = Path(__file__).resolve().parents[3]
SPEC = Path(__file__).resolve().parent / "fixtures" / "cdi-nvidia-2gpu.yaml"
CDI = "/etc/cdi/nvidia.yaml"
GUARD = "/etc/metalab/guard.json"
GROUP = "metalab-gpu"  # lab_gpu_device_group (roles/common), the group the nvidia_driver role gives the nodes
# name -> (major, minor) of an always-present device: the GPUs are /dev/zero (reads give bytes), the rest /dev/null.
NODES = {
    "nvidia0": (1, 5),
    "nvidia1": (1, 5),
    "nvidiactl": (1, 3),
    "nvidia-uvm": (1, 3),
    "nvidia-uvm-tools": (1, 3),
    "nvidia-modeset": (1, 3),
}
# A third GPU user, known to the guard only (no host account): his GPU start is refused before anything is made.
DAVE = {"uid": 20999, "gid": 20999, "home": "/nonexistent/dave", "gpu": True}


def _session_limits(host, *extra):
    """session_limits alone (what `--tags session_limits` of a converge does), against the test's inventory."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    argv = ["ansible-playbook", "-i", host.backend.ansible_inventory, "--limit", host.backend.host,
            str(ROOT / "playbooks/site.yml"), "--tags", "session_limits", *extra]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def stop_all(host):
    for user in ("alice", "bob"):
        root(host, "metalab-guard stop %s", user)


@pytest.fixture(scope="module")
def gpu_host(host):
    """The sandbox as a two-GPU host; yields the gid of the device group."""
    for name in NODES:
        if root(host, "test -e /dev/%s", name).rc == 0:
            requirement_missing(f"/dev/{name} exists on {host.backend.host}: not a GPU-less sandbox")
    if root(host, "test -e %s", CDI).rc == 0:
        requirement_missing(f"{CDI} exists on {host.backend.host}: not a GPU-less sandbox")
    created_group = root(host, "getent group %s", GROUP).rc != 0
    if created_group:
        ok(host, "groupadd --system %s", GROUP)  # what ansible.builtin.group (system: true) runs
    gid = int(ok(host, "getent group %s", GROUP).split(":")[2])
    created_cdi_dir = root(host, "test -d /etc/cdi").rc != 0
    original = ok(host, "cat %s", GUARD)
    try:
        for name, (major, minor) in NODES.items():
            ok(host, f"mknod -m 0660 /dev/{name} c {major} {minor} && chown root:{GROUP} /dev/{name}")
        ok(host, "mkdir -p /etc/cdi")
        write_root_file(host, CDI, SPEC.read_text(), mode="0644")
        stop_all(host)
        _session_limits(host, "-e", json.dumps({"session_limits_gpus": [0, 1]}))
        config = json.loads(ok(host, "cat %s", GUARD))
        assert config["runtime"]["gpus"] == [0, 1]
        assert config["runtime"]["gpu_groups"] == [gid]  # read from the host by session_limits
        # alice gets GPU rights for these tests (bob has them in the inventory); dave only exists for the guard.
        config["users"]["alice"]["gpu"] = True
        config["users"]["dave"] = DAVE
        write_root_file(host, GUARD, json.dumps(config, indent=2))
        yield gid
    finally:
        stop_all(host)
        write_root_file(host, GUARD, original)
        root(host, "rm -f %s", CDI)
        if created_cdi_dir:
            root(host, "rmdir /etc/cdi")
        for name in NODES:
            root(host, "rm -f /dev/%s", name)
        if created_group:
            root(host, "groupdel %s", GROUP)


@pytest.fixture
def clean(host, gpu_host):
    stop_all(host)
    yield gpu_host
    stop_all(host)


def account(host, user):
    uid, gid = ok(host, "id -u lab-%s && id -g lab-%s", user, user).split()
    return int(uid), int(gid)


def inside(host, user, script):
    """Run ``script`` in USER's runtime as her own uid and gid (the user JupyterLab and its kernels run as)."""
    uid, gid = account(host, user)
    return root(host, "podman exec --user %s metalab-%s sh -c %s", f"{uid}:{gid}", user, script)


def gpu_nodes(host, user):
    """The /dev/nvidiaN nodes in USER's runtime."""
    listing = inside(host, user, "ls /dev")
    assert listing.rc == 0, listing.stderr
    return sorted(n for n in listing.stdout.split() if re.fullmatch(r"nvidia[0-9]+", n))


def start(host, user, gpu=True):
    return root(host, "metalab-guard start %s --json" + (" --gpu" if gpu else ""), user)


def started(host, user, gpu=True):
    result = start(host, user, gpu)
    assert result.rc == 0, f"start {user} gpu={gpu}: {result.stdout} {result.stderr}"
    return json.loads(result.stdout)


def test_gpu_runtime_sees_exactly_one_gpu_and_she_can_open_it(host, clean):
    # On the host the node is the driver role's root:metalab-gpu 0660: her lab account cannot open it there.
    assert ok(host, "stat -c '%U:%G %a' /dev/nvidia0").strip() == f"root:{GROUP} 660"
    assert root(host, "runuser -u lab-alice -- sh -c 'exec 3<>/dev/nvidia0'").rc != 0
    started(host, "alice")
    assert gpu_nodes(host, "alice") == ["nvidia0"]
    uid, gid = account(host, "alice")
    assert inside(host, "alice", "id -u").stdout.strip() == str(uid)
    # In the runtime she can: podman gives every device of a --user container to that uid and gid (the OCI spec it
    # writes names them, with no mode; crun makes such nodes 0666) unless the CDI spec names them (next test).
    owner = inside(host, "alice", "stat -c '%u:%g' /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm").stdout.split()
    assert owner == [f"{uid}:{gid}"] * 3
    for node in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        opened = inside(host, "alice", f"exec 3<>/dev/{node} && echo opened")
        assert (opened.rc, opened.stdout.strip()) == (0, "opened"), f"/dev/{node}: {opened.stderr}"
    read = inside(host, "alice", "head -c 4 /dev/nvidia0 | od -An -tx1")
    assert read.stdout.split() == ["00", "00", "00", "00"], read.stderr
    # Her JupyterLab and its kernels descend from PID 1: her uid and group, and the device group besides.
    status = inside(host, "alice", "grep -E '^(Uid|Gid|Groups):' /proc/1/status").stdout.split("\n")
    assert status[0].split()[1] == str(uid) and status[1].split()[1] == str(gid)
    assert str(clean) in status[2].split()[1:]


def test_a_gpu_node_that_keeps_the_hosts_owner_and_mode_opens_through_the_device_group(host, clean):
    """A CDI spec may name a node's owner and mode (the CDI format allows it); podman then keeps them. Without the
    device group she could not open it (root:metalab-gpu 0660); the runtime's processes can, a process without the
    group cannot."""
    keep = {"path": "/dev/nvidia0", "fileMode": 0o660, "uid": 0, "gid": clean}
    spec = {"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
            "devices": [{"name": "0", "containerEdits": {"deviceNodes": [keep]}}],
            "containerEdits": {"deviceNodes": [{"path": "/dev/nvidiactl"}]}}  # fmt: skip
    write_root_file(host, CDI, json.dumps(spec), mode="0644")  # JSON is YAML
    try:
        started(host, "alice")
        mode = root(host, "podman exec metalab-alice stat -c '%u:%g %a' /dev/nvidia0")
        assert mode.stdout.strip() == f"0:{clean} 660", mode.stderr
        # As the runtime's own processes run (podman exec without --user keeps the container's groups).
        opened = root(host, "podman exec metalab-alice sh -c 'id -u; exec 3<>/dev/nvidia0 && echo opened'")
        assert opened.stdout.split() == [str(account(host, "alice")[0]), "opened"], opened.stderr
        # Her uid without the device group: refused, so the group is what opens it.
        refused = inside(host, "alice", "exec 3<>/dev/nvidia0")
        assert refused.rc != 0 and "Permission denied" in refused.stderr
    finally:
        stop_all(host)
        write_root_file(host, CDI, SPEC.read_text(), mode="0644")


def test_cpu_runtime_and_another_users_runtime_see_no_gpu(host, clean):
    started(host, "alice", gpu=False)
    started(host, "bob", gpu=False)
    assert gpu_nodes(host, "alice") == []
    assert gpu_nodes(host, "bob") == []
    root(host, "metalab-guard stop alice")
    started(host, "alice")
    assert gpu_nodes(host, "alice") == ["nvidia0"]
    assert gpu_nodes(host, "bob") == []  # a running CPU runtime never gains a device
    assert inside(host, "bob", "ls /dev/nvidiactl").rc != 0


def test_two_gpu_runtimes_get_different_gpus_and_a_third_is_refused(host, clean):
    alice = started(host, "alice")
    bob = started(host, "bob")
    assert {alice["gpu"], bob["gpu"]} == {0, 1}
    assert gpu_nodes(host, "alice") == [f"nvidia{alice['gpu']}"]
    assert gpu_nodes(host, "bob") == [f"nvidia{bob['gpu']}"]
    opened = inside(host, "bob", f"exec 3<>/dev/nvidia{bob['gpu']} && echo opened")
    assert (opened.rc, opened.stdout.strip()) == (0, "opened"), opened.stderr
    third = start(host, "dave")
    assert third.rc != 0
    assert "no GPU runtime available right now (2 of 2 in use)" in third.stdout + third.stderr
    assert root(host, "podman container exists metalab-dave").rc != 0


def test_a_stop_frees_the_gpu_for_the_next_start_through_labctl(host, clean):
    alice = started(host, "alice")
    started(host, "bob")
    root(host, "metalab-guard stop alice")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), METALAB_COLLECTION=str(ROOT))
    argv = ["labctl", "session", "start", "alice", "--gpu", "--inventory", host.backend.ansible_inventory,
            "--host", host.backend.host]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started a gpu runtime for alice" in result.stdout
    assert gpu_nodes(host, "alice") == [f"nvidia{alice['gpu']}"]


def test_the_portals_gpu_start_opens_a_gpu(host, clean, portal_client, passwords):
    bob = portal_client()
    bob.login("bob", passwords["bob"])
    status = bob.status()
    assert (status["gpus_total"], status["gpus_free"]) == (2, 2)
    assert bob.post("/start", {"kind": "gpu"}, csrf_from="/").status == 302
    nodes = gpu_nodes(host, "bob")
    assert len(nodes) == 1
    opened = inside(host, "bob", f"exec 3<>/dev/{nodes[0]} && echo opened")
    assert (opened.rc, opened.stdout.strip()) == (0, "opened"), opened.stderr
    assert bob.status()["gpus_free"] == 1


def test_the_ledger_records_the_gpu(host, clean):
    alice = started(host, "alice")
    listed = {r["user"]: r for r in json.loads(ok(host, "metalab-guard list --json"))}
    assert (listed["alice"]["kind"], listed["alice"]["gpu"]) == ("gpu", alice["gpu"])
    stopped = json.loads(ok(host, "metalab-guard stop alice --json"))
    assert (stopped["session"], stopped["kind"], stopped["gpu"]) == (alice["session"], "gpu", alice["gpu"])
    query = f"SELECT kind, gpu, ended IS NOT NULL FROM runtimes WHERE id = {int(alice['session'])}"
    row = ok(host, "python3 -c %s", LEDGER_QUERY.format(query=query))
    assert json.loads(row) == ["gpu", alice["gpu"], 1]
    usage = json.loads(ok(host, "metalab-guard usage --json"))["usage"]
    assert any(u["user"] == "alice" and u["kind"] == "gpu" and u["sessions"] >= 1 for u in usage), usage


LEDGER_QUERY = (
    "import json, sqlite3; db = sqlite3.connect('file:/var/lib/metalab/guard/ledger.sqlite?mode=ro', uri=True); "
    "print(json.dumps(list(db.execute('{query}').fetchone())))"
)
