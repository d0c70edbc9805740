"""gpu.build_gpu_facts and gpu.collect_gpu_facts: sysfs + nvidia-smi merged, with a scripted run_command."""

from __future__ import annotations

from ansible_collections.metalab.lab.plugins.module_utils import gpu
from conftest import fixture_text
from scripted import Scripted


def a100_host(sysfs):
    sysfs("0000:07:00.0", device="0x20b0", numa_node="0")
    sysfs("0000:0f:00.0", device="0x20b0", numa_node="0")
    return str(sysfs.root)


def test_no_gpu_no_driver(tmp_path):
    run = Scripted({})
    facts = gpu.collect_gpu_facts(run, None, str(tmp_path), str(tmp_path))
    assert run.calls == []
    assert facts["metalab_gpus"] == []
    assert facts["metalab_gpu_present"] is False
    assert facts["metalab_gpu_count"] == 0
    assert facts["metalab_gpu_driver"]["nvml_state"] == "not_installed"
    assert facts["metalab_gpu_driver"]["reboot_required"] is False


def test_gpu_without_driver(sysfs, tmp_path):
    sysfs("0000:00:1e.0", device="0x1eb8", driver=None)
    facts = gpu.collect_gpu_facts(Scripted({}), None, str(sysfs.root), str(tmp_path))
    (only,) = facts["metalab_gpus"]
    assert only["driver_visible"] is False
    assert only["name"] is None and only["model_hint"] == "Tesla T4"
    assert facts["metalab_gpu_present"] is True
    assert facts["metalab_gpu_driver"]["installed"] is False


def test_a100_with_mig(sysfs, tmp_path):
    run = Scripted(
        {
            "--query-gpu=" + ",".join(gpu.SMI_QUERY_FIELDS): (0, fixture_text("a100_mig_query.csv"), ""),
            "-q": (0, fixture_text("a100_q_compute.txt"), ""),
            "-L": (0, fixture_text("a100_mig_list.txt"), ""),
        }
    )
    facts = gpu.collect_gpu_facts(run, "/usr/bin/nvidia-smi", a100_host(sysfs), str(tmp_path))
    assert [call[1] for call in run.calls] == ["--query-gpu=" + ",".join(gpu.SMI_QUERY_FIELDS), "-q", "-L"]
    driver = facts["metalab_gpu_driver"]
    assert (driver["version"], driver["cuda_version"], driver["nvml_state"]) == ("570.124.06", "12.8", "ok")
    first, second = facts["metalab_gpus"]
    assert first["name"] == "NVIDIA A100-SXM4-40GB" and first["numa_node"] == 0
    assert len(first["mig_devices"]) == 3 and second["mig_devices"] == []


def test_t4_skips_mig_listing(sysfs, tmp_path):
    sysfs("0000:00:1e.0")
    proc = tmp_path / "proc" / "driver" / "nvidia"
    proc.mkdir(parents=True)
    (proc / "version").write_text(fixture_text("t4_proc_version.txt"))
    run = Scripted(
        {
            "--query-gpu=" + ",".join(gpu.SMI_QUERY_FIELDS): (0, fixture_text("t4_query.csv"), ""),
            "-q": (0, fixture_text("t4_q_compute.txt"), ""),
        }
    )
    facts = gpu.collect_gpu_facts(run, "nvidia-smi", str(sysfs.root), str(tmp_path / "proc"))
    assert len(run.calls) == 2
    driver = facts["metalab_gpu_driver"]
    assert driver["loaded"] is True and driver["kernel_module_flavor"] == "proprietary"
    assert driver["reboot_required"] is False


def test_mismatch_means_reboot(sysfs, tmp_path):
    a100 = a100_host(sysfs)
    proc = tmp_path / "driver" / "nvidia"
    proc.mkdir(parents=True)
    (proc / "version").write_text(fixture_text("h100_proc_version.txt").replace("570.124.06", "550.144.03"))
    run = Scripted({"--query-gpu=" + ",".join(gpu.SMI_QUERY_FIELDS): (18, fixture_text("mismatch.txt"), "")})
    facts = gpu.collect_gpu_facts(run, "nvidia-smi", a100, str(tmp_path))
    driver = facts["metalab_gpu_driver"]
    assert driver["nvml_state"] == "mismatch"
    assert driver["reboot_required"] is True
    assert driver["nvml_library_version"] == "570.124"
    assert driver["kernel_module_version"] == "550.144.03"
    assert all(not g["driver_visible"] for g in facts["metalab_gpus"])


def test_gpu_seen_by_driver_but_not_in_sysfs_is_kept(tmp_path):
    smi = gpu.parse_smi_query(fixture_text("t4_query.csv"))
    facts = gpu.build_gpu_facts([], smi_installed=True, smi_gpus=smi)
    (only,) = facts["metalab_gpus"]
    assert only["driver_visible"] is True and only["pci_class"] is None
    assert facts["metalab_gpu_count"] == 0
