"""nvidia-smi and /proc parsing on the (reconstructed) fixtures."""

from __future__ import annotations

import pytest
from ansible_collections.metalab.lab.plugins.module_utils import gpu
from conftest import fixture_text


def test_query_argv_asks_every_parsed_field():
    argv = gpu.smi_query_argv("/usr/bin/nvidia-smi")
    assert argv[0] == "/usr/bin/nvidia-smi"
    assert argv[1] == "--query-gpu=" + ",".join(gpu.SMI_QUERY_FIELDS)
    assert argv[2] == "--format=csv,noheader,nounits"


def test_t4_query():
    assert gpu.parse_smi_query(fixture_text("t4_query.csv")) == [
        {
            "index": 0,
            "pci_address": "0000:00:1e.0",
            "name": "Tesla T4",
            "uuid": "GPU-8a4e5c0b-2f6d-1c3e-7b9a-0d4f6e2a1b3c",
            "memory_total_mib": 15360,
            "driver_version": "535.183.01",
            "persistence_mode": True,
            "mig_mode": None,
            "mig_mode_pending": None,
            "ecc_mode": "enabled",
            "ecc_errors_uncorrected": 0,
            "temperature_c": 29,
            "compute_mode": "Default",
        }
    ]


def test_a100_mig_query():
    gpus = gpu.parse_smi_query(fixture_text("a100_mig_query.csv"))
    assert [(g["index"], g["pci_address"], g["mig_mode"], g["mig_mode_pending"]) for g in gpus] == [
        (0, "0000:07:00.0", "enabled", "enabled"),
        (1, "0000:0f:00.0", "disabled", "enabled"),
    ]
    assert {g["memory_total_mib"] for g in gpus} == {40960}


def test_h100_query():
    gpus = gpu.parse_smi_query(fixture_text("h100_query.csv"))
    assert len(gpus) == 4
    assert [g["persistence_mode"] for g in gpus] == [True, True, True, False]
    assert gpus[3]["ecc_errors_uncorrected"] == 2
    assert gpus[2]["pci_address"] == "0000:3a:00.0"


def test_placeholders_become_none():
    (found,) = gpu.parse_smi_query(fixture_text("na_fields_query.csv"))
    assert found["persistence_mode"] is None  # [Insufficient Permissions]
    assert found["mig_mode"] is None  # [N/A]
    assert found["ecc_mode"] is None  # [Not Supported]
    assert found["temperature_c"] is None  # [Unknown Error]
    assert found["memory_total_mib"] == 23034


def test_query_with_wrong_field_count_is_refused():
    with pytest.raises(ValueError, match="expected 13"):
        gpu.parse_smi_query("0, 00000000:00:1E.0, Tesla T4\n")


def test_empty_query_output():
    assert gpu.parse_smi_query("\n") == []


@pytest.mark.parametrize(
    ("name", "driver", "cuda"),
    [
        ("t4_q_compute.txt", "535.183.01", "12.2"),
        ("a100_q_compute.txt", "570.124.06", "12.8"),
        ("h100_q_compute.txt", "570.124.06", "12.8"),
        ("no_driver.txt", None, None),
    ],
)
def test_header(name, driver, cuda):
    assert gpu.parse_smi_header(fixture_text(name)) == {"driver_version": driver, "cuda_version": cuda}


def test_header_of_default_table():
    line = "| NVIDIA-SMI 570.124.06             Driver Version: 570.124.06     CUDA Version: 12.8     |"
    assert gpu.parse_smi_header(line) == {"driver_version": "570.124.06", "cuda_version": "12.8"}


def test_mig_list():
    migs = gpu.parse_smi_list(fixture_text("a100_mig_list.txt"))
    assert sorted(migs) == [0, 1]
    assert migs[1] == []
    assert [(m["profile"], m["index"]) for m in migs[0]] == [("3g.20gb", 0), ("2g.10gb", 1), ("1g.5gb", 2)]
    assert migs[0][0]["uuid"] == "MIG-c6d4f1a1-8f3b-5a9e-9c1d-2a7e4b6f0d11"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("t4_proc_version.txt", {"version": "535.183.01", "flavor": "proprietary"}),
        ("h100_proc_version.txt", {"version": "570.124.06", "flavor": "open"}),
    ],
)
def test_kernel_module_version(name, expected):
    assert gpu.parse_kernel_module_version(fixture_text(name)) == expected


def test_kernel_module_not_loaded():
    assert gpu.parse_kernel_module_version(None) == {"version": None, "flavor": None}


@pytest.mark.parametrize(
    ("rc", "stdout", "state", "library"),
    [
        (18, fixture_text("mismatch.txt"), "mismatch", "570.124"),
        (9, fixture_text("no_driver.txt"), "no_driver", None),
        (6, "No devices were found\n", "no_devices", None),
        (255, "Unknown Error\n", "error", None),
    ],
)
def test_classify_failure(rc, stdout, state, library):
    result = gpu.classify_smi_failure(rc, stdout, "")
    assert result["state"] == state
    assert result["library_version"] == library
    assert result["message"]
