"""libvirt's vCPU bandwidth and block IO rules, as the emulating adapters apply them."""

from __future__ import annotations

import pytest

from vdsmlike.virt.errors import HypervisorError
from vdsmlike.virt.events import CpuTune
from vdsmlike.virt.tuning import IO_TUNE_KEYS, apply_cpu_tune, block_io_tune, io_tune_limits

START = CpuTune(quota=-1, period=100000, vcpus=2)


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [
        (None, None, START),
        (0, 0, START),
        (1000, 1000, CpuTune(1000, 1000, 2)),
        (17592186044415, 1000000, CpuTune(17592186044415, 1000000, 2)),
        (-2**63, None, START),
        (50000, None, CpuTune(50000, 100000, 2)),
    ],
)  # fmt: skip
def test_cpu_tune_values_libvirt_takes(quota, period, expected) -> None:
    """None and 0 change nothing, negative quotas are unlimited, the bounds are inclusive."""
    assert apply_cpu_tune(START, quota, period) == expected


@pytest.mark.parametrize(
    ("quota", "period", "message"),
    [
        (999, None, "value of 'vcpu_quota' is out of range [1000, 17592186044415]"),
        (17592186044416, None, "vcpu_quota"),
        (None, 999, "value of 'vcpu_period' is out of range [1000, 1000000]"),
        (None, 1000001, "vcpu_period"),
        (None, -1, "negative int to unsigned"),
        ("5000", None, "vcpu_quota must be an integer"),
        (None, True, "vcpu_period must be an integer"),
    ],
)
def test_cpu_tune_values_libvirt_refuses(quota, period, message) -> None:
    """Values outside libvirt's ranges, negative periods and non-integers are refused."""
    with pytest.raises(HypervisorError) as caught:
        apply_cpu_tune(START, quota, period)
    assert message in str(caught.value)


def test_block_limits_fill_the_keys_left_out() -> None:
    """Keys left out are 0, no limit."""
    assert block_io_tune({"read_iops_sec": 5}) == dict.fromkeys(IO_TUNE_KEYS, 0) | {
        "read_iops_sec": 5
    }
    assert io_tune_limits({}) == dict.fromkeys(IO_TUNE_KEYS, 0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"iops": 1}, "unknown block IO tune parameter 'iops'"),
        ({"read_iops_sec": -1}, "negative int to unsigned"),
        ({"read_iops_sec": "1"}, "must be an integer"),
        ({"read_bytes_sec": 10**15 + 1}, "no more than 1000000000000000"),
        ({"total_iops_sec": 1, "write_iops_sec": 1}, "total and read/write of iops_sec"),
        ({"total_bytes_sec": 1, "read_bytes_sec": 1}, "total and read/write of bytes_sec"),
    ],
)
def test_block_limits_libvirt_refuses(values, message) -> None:
    """Unknown keys, negative, huge and mixed total and read/write limits are refused."""
    with pytest.raises(HypervisorError) as caught:
        block_io_tune(values)
    assert message in str(caught.value)


def test_total_with_other_unit_is_fine() -> None:
    """A total bytes limit may go with read and write operation limits."""
    limits = block_io_tune({"total_bytes_sec": 1, "read_iops_sec": 2, "write_iops_sec": 3})
    assert limits["total_bytes_sec"] == 1 and limits["write_iops_sec"] == 3
