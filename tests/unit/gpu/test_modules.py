"""The gpu_facts, gpu_health and nvidia_plan modules with a mocked run_command (data driven)."""

from __future__ import annotations

import pytest
from ansible.module_utils import basic
from ansible_collections.metalab.lab.plugins.module_utils import gpu
from ansible_collections.metalab.lab.plugins.modules import gpu_facts, gpu_health, nvidia_plan
from conftest import fixture_text

QUERY = "--query-gpu=" + ",".join(gpu.SMI_QUERY_FIELDS)


@pytest.fixture
def gpu_module(run_module, monkeypatch):
    """``gpu_module(module, args, smi_path, answers)`` runs the module; returns (failed, result, argv of every command).

    ``answers`` maps a command's first argument to what run_command returns for it.
    """

    def run(module, args, smi_path=None, answers=None):
        calls = []

        def run_command(self, argv, **kwargs):
            calls.append(list(argv))
            return (answers or {})[argv[1]]

        monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
        monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, *a, **k: smi_path)
        ended = run_module(module.main, args)
        return ended.failed, ended.result, calls

    return run


@pytest.fixture
def t4_host(sysfs, tmp_path):
    sysfs("0000:00:1e.0", device="0x1eb8")
    return {"sysfs_root": str(sysfs.root), "proc_root": str(tmp_path / "proc")}


T4_ANSWERS = {
    QUERY: (0, fixture_text("t4_query.csv"), ""),
    "-q": (0, fixture_text("t4_q_compute.txt"), ""),
}


@pytest.mark.parametrize("check_mode", [False, True])
def test_gpu_facts_cpu_host(gpu_module, tmp_path, check_mode):
    args = {"sysfs_root": str(tmp_path), "proc_root": str(tmp_path), "_ansible_check_mode": check_mode}
    failed, result, calls = gpu_module(gpu_facts, args)
    assert not failed and result["changed"] is False
    assert calls == []
    assert result["ansible_facts"]["metalab_gpu_present"] is False


def test_gpu_facts_t4(gpu_module, t4_host):
    failed, result, calls = gpu_module(gpu_facts, t4_host, "/usr/bin/nvidia-smi", T4_ANSWERS)
    assert not failed and result["changed"] is False
    assert calls == [gpu.smi_query_argv("/usr/bin/nvidia-smi"), ["/usr/bin/nvidia-smi", "-q", "-d", "COMPUTE"]]
    facts = result["ansible_facts"]
    assert facts["metalab_gpu_driver"]["version"] == "535.183.01"
    assert facts["metalab_gpus"][0]["name"] == "Tesla T4"


def test_gpu_facts_mismatch_is_not_a_failure(gpu_module, t4_host):
    answers = {QUERY: (18, fixture_text("mismatch.txt"), "")}
    failed, result, _calls = gpu_module(gpu_facts, t4_host, "/usr/bin/nvidia-smi", answers)
    assert not failed
    assert result["ansible_facts"]["metalab_gpu_driver"]["reboot_required"] is True


def test_gpu_facts_unparseable_output_fails(gpu_module, t4_host):
    answers = {QUERY: (0, "0, 00000000:00:1E.0\n", "")}
    failed, result, _calls = gpu_module(gpu_facts, t4_host, "/usr/bin/nvidia-smi", answers)
    assert failed and "cannot parse nvidia-smi output" in result["msg"]


def test_gpu_health_healthy_t4(gpu_module, t4_host, tmp_path):
    spec = tmp_path / "nvidia.yaml"
    spec.write_text(fixture_text("t4_cdi.yaml"))
    state = tmp_path / "state.json"
    state.write_text('{"driver_version": "535.183.01"}')
    args = dict(t4_host, cdi_spec=str(spec), cdi_state=str(state), fail_on_problem=True)
    failed, result, _calls = gpu_module(gpu_health, args, "/usr/bin/nvidia-smi", T4_ANSWERS)
    assert not failed, result.get("msg")
    assert result["ok"] is True and result["cdi"]["current"] is True and result["changed"] is False


@pytest.mark.parametrize(("fail_on_problem", "failed"), [(False, False), (True, True)])
def test_gpu_health_missing_spec(gpu_module, t4_host, tmp_path, fail_on_problem, failed):
    args = dict(t4_host, cdi_spec=str(tmp_path / "none.yaml"), cdi_state=str(tmp_path / "none.json"))
    args["fail_on_problem"] = fail_on_problem
    got_failed, result, _calls = gpu_module(gpu_health, args, "/usr/bin/nvidia-smi", T4_ANSWERS)
    assert got_failed is failed
    assert result["ok"] is False
    assert "CDI spec /etc/cdi/nvidia.yaml missing" in result["problems"][0]


def test_nvidia_plan_ok(gpu_module):
    args = {
        "distribution": "Ubuntu",
        "version": "24.04",
        "architecture": "x86_64",
        "kernel_release": "6.8.0-51-generic",
    }
    failed, result, _calls = gpu_module(nvidia_plan, args)
    assert not failed and result["changed"] is False
    assert result["plan"]["driver"]["packages"] == ["nvidia-open-580"]
    assert result["plan"]["toolkit"]["version"] == "1.18.0-1"


def test_nvidia_plan_refuses_amazon_linux_2(gpu_module):
    failed, result, _calls = gpu_module(
        nvidia_plan, {"distribution": "Amazon", "version": "2", "architecture": "x86_64"}
    )
    assert failed and result["msg"].startswith("Amazon Linux 2 is past its end of support")
