"""gpu.evaluate_health and gpu.parse_cdi_spec: data-driven host verdicts."""

from __future__ import annotations

import json

import pytest
from ansible_collections.metalab.lab.plugins.module_utils import gpu
from conftest import fixture_text

T4_UUID = "GPU-8a4e5c0b-2f6d-1c3e-7b9a-0d4f6e2a1b3c"
T4_PCI = [
    {
        "pci_address": "0000:00:1e.0",
        "vendor_id": "0x10de",
        "device_id": "0x1eb8",
        "pci_class": "0x0302",
        "model_hint": "Tesla T4",
        "numa_node": None,
        "kernel_driver": "nvidia",
    }
]


def t4_facts(**driver):
    facts = gpu.build_gpu_facts(
        T4_PCI,
        smi_installed=True,
        smi_gpus=gpu.parse_smi_query(fixture_text("t4_query.csv")),
        smi_header=gpu.parse_smi_header(fixture_text("t4_q_compute.txt")),
    )
    facts["metalab_gpu_driver"].update(driver)
    return facts


def t4_spec():
    return gpu.parse_cdi_spec(fixture_text("t4_cdi.yaml"))


def test_parse_cdi_spec_yaml():
    assert t4_spec() == {"cdi_version": "0.5.0", "kind": "nvidia.com/gpu", "devices": ["0", T4_UUID, "all"]}


def test_parse_cdi_spec_json():
    text = json.dumps({"cdiVersion": "0.7.0", "kind": "nvidia.com/gpu", "devices": [{"name": "0"}, {"name": "all"}]})
    assert gpu.parse_cdi_spec(text) == {"cdi_version": "0.7.0", "kind": "nvidia.com/gpu", "devices": ["0", "all"]}


def test_expected_cdi_devices_with_mig():
    smi = gpu.parse_smi_query(fixture_text("a100_mig_query.csv"))
    migs = gpu.parse_smi_list(fixture_text("a100_mig_list.txt"))
    for entry in smi:
        entry["mig_devices"] = migs[entry["index"]]
    names = gpu.expected_cdi_devices(smi)
    assert "0" not in names  # a MIG-enabled GPU is handed out by its instances
    assert {"0:0", "0:1", "0:2", "1", "all"} <= set(names)
    assert "MIG-c6d4f1a1-8f3b-5a9e-9c1d-2a7e4b6f0d11" in names


def test_cpu_host_is_ok_and_not_a_gpu_host():
    facts = gpu.build_gpu_facts([], smi_installed=False)
    report = gpu.evaluate_health(facts, None, None)
    assert report["ok"] is True and report["gpu_host"] is False
    assert report["problems"] == []


def test_healthy_t4():
    report = gpu.evaluate_health(t4_facts(), t4_spec(), {"driver_version": "535.183.01"})
    assert report["ok"] is True, report["problems"]
    assert report["cdi"] == {"present": True, "current": True, "missing": [], "unexpected": []}
    assert report["summary"] == "1 GPU(s) on the bus, 1 seen by driver 535.183.01: healthy"


@pytest.mark.parametrize(
    ("case", "facts", "spec", "state", "expect"),
    [
        (
            "mismatch",
            gpu.build_gpu_facts(
                T4_PCI, smi_installed=True, smi_failure=gpu.classify_smi_failure(18, fixture_text("mismatch.txt"), "")
            ),
            t4_spec(),
            None,
            "reboot the host",
        ),
        ("driver missing", gpu.build_gpu_facts(T4_PCI, smi_installed=False), None, None, "not installed"),
        (
            "module not loaded",
            gpu.build_gpu_facts(
                T4_PCI, smi_installed=True, smi_failure=gpu.classify_smi_failure(9, fixture_text("no_driver.txt"), "")
            ),
            t4_spec(),
            None,
            "cannot reach the kernel driver",
        ),
        ("no cdi spec", t4_facts(), None, None, "CDI spec /etc/cdi/nvidia.yaml missing"),
        ("stale cdi spec", t4_facts(), t4_spec(), {"driver_version": "535.161.08"}, "generated for driver 535.161.08"),
        (
            "cdi lists other gpus",
            t4_facts(),
            {"cdi_version": "0.5.0", "kind": "nvidia.com/gpu", "devices": ["0", "1", "GPU-other", "all"]},
            None,
            "does not list the GPUs",
        ),
    ],
)
def test_problems(case, facts, spec, state, expect):
    report = gpu.evaluate_health(facts, spec, state)
    assert report["ok"] is False, case
    assert any(expect in problem for problem in report["problems"]), report["problems"]


def test_gpu_missing_from_driver_is_named():
    pci = [dict(T4_PCI[0]), dict(T4_PCI[0], pci_address="0000:00:1f.0")]
    facts = gpu.build_gpu_facts(
        pci, smi_installed=True, smi_gpus=gpu.parse_smi_query(fixture_text("t4_query.csv")), smi_header={}
    )
    report = gpu.evaluate_health(facts, t4_spec(), None)
    assert (report["gpus_on_bus"], report["gpus_visible"]) == (2, 1)
    assert any("missing 0000:00:1f.0" in problem for problem in report["problems"])


def test_h100_persistence_off_and_ecc_warning():
    pci = [
        dict(T4_PCI[0], pci_address=address, device_id="0x2330")
        for address in ("0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0")
    ]
    facts = gpu.build_gpu_facts(pci, smi_installed=True, smi_gpus=gpu.parse_smi_query(fixture_text("h100_query.csv")))
    spec = {"devices": ["0", "1", "2", "3", "all"]}  # index-only naming strategy
    report = gpu.evaluate_health(facts, spec, None)
    assert report["problems"] == ["persistence mode off on GPU 3: enable nvidia-persistenced"]
    assert report["warnings"] == ["GPU 3 reports 2 uncorrected ECC errors"]
    assert report["cdi"]["current"] is True
    relaxed = gpu.evaluate_health(facts, spec, None, require_persistence=False)
    assert relaxed["ok"] is True


def test_nouveau_bound_gpu_is_a_problem_once_driver_installed():
    pci = [dict(T4_PCI[0], kernel_driver="nouveau")]
    facts = gpu.build_gpu_facts(pci, smi_installed=True, smi_failure=gpu.classify_smi_failure(9, "", ""))
    report = gpu.evaluate_health(facts, None, None, require_cdi=False)
    assert "GPU 0000:00:1e.0 is bound to nouveau, not nvidia" in report["problems"]


def test_mig_pending_is_a_warning():
    smi = gpu.parse_smi_query(fixture_text("a100_mig_query.csv"))
    pci = [dict(T4_PCI[0], pci_address=g["pci_address"]) for g in smi]
    facts = gpu.build_gpu_facts(pci, smi_installed=True, smi_gpus=smi)
    report = gpu.evaluate_health(facts, None, None, require_cdi=False)
    assert "GPU 1 MIG mode change pending (disabled -> enabled)" in report["warnings"]
