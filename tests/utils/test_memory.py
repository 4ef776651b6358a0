"""utils/memory.py: what the pre-flight checks compare their estimates with."""

from __future__ import annotations

import jax

from videomt_jax.utils import memory
from videomt_jax.utils.memory import HOST_RAM, device_memory


class Accelerator:
    platform, device_kind = "gpu", "NVIDIA H100 80GB HBM3"

    def memory_stats(self):
        return {"bytes_limit": 79 * 2**30, "bytes_in_use": 2**30}


def test_an_accelerator_gives_its_allocator_limit_or_what_is_free_of_it():
    assert device_memory(Accelerator()) == (79 * 2**30, "NVIDIA H100 80GB HBM3 (gpu) memory")
    assert device_memory(Accelerator(), free=True) == (78 * 2**30, "NVIDIA H100 80GB HBM3 (gpu) free memory")


def test_a_cpu_device_gives_the_hosts_available_ram(monkeypatch, tmp_path):
    have, what = device_memory(jax.devices("cpu")[0])
    assert what == HOST_RAM and have > 0
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    1234567 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", str(meminfo))
    assert memory.host_available_bytes() == 1234567 * 1024
    assert device_memory(jax.devices("cpu")[0]) == (1234567 * 1024, HOST_RAM)
