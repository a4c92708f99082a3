"""Which GPUs the launcher can hand out, and which host cores are near each one.

Read through NVML (pynvml, from the nvidia-ml-py dependency), never through torch: the launcher
must not initialize CUDA (seconds on a GPU host, and a context it would hold for the whole
sweep). Without NVML (no driver library), or where NVML's count is not CUDA's (MIG), the device
count falls back to torch, and the cores to an even split.
Kept free of heavy imports: Hydra scans this package for plugins.
"""

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional


def _nvml() -> Any:
    """pynvml, initialized; None where NVML is not there (no driver, no package)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # noqa: BLE001 - any failure means: no NVML here
        return None


def visible_gpu_ids() -> list[str]:
    """The ids `CUDA_VISIBLE_DEVICES` can name for every GPU this process may use."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    nvml = _nvml()
    if nvml is not None and not _any_mig(nvml):
        return [str(i) for i in range(nvml.nvmlDeviceGetCount())]
    import torch  # only without NVML, or with MIG: counting devices this way initializes CUDA here

    return [str(i) for i in range(torch.cuda.device_count())]


def _any_mig(nvml: Any) -> bool:
    """Whether a GPU runs MIG: CUDA then sees its instances, not the GPU NVML counts."""
    for i in range(nvml.nvmlDeviceGetCount()):
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(i))
        except Exception:  # noqa: BLE001 - a GPU without MIG answers "not supported"
            continue
        if current:
            return True
    return False


def _handle(nvml: Any, device_id: str) -> Any:
    """NVML's handle for a CUDA device id, or None when the id cannot be matched for sure.
    NVML numbers GPUs in PCI bus order; CUDA does too under CUDA_DEVICE_ORDER=PCI_BUS_ID, and by
    default (fastest first) only among GPUs of one model, where ties go by PCI bus order."""
    if device_id.startswith("GPU-"):
        return nvml.nvmlDeviceGetHandleByUUID(device_id)
    if not device_id.isdigit():
        return None  # a MIG instance or something else: its cores are not told apart
    count = nvml.nvmlDeviceGetCount()
    if int(device_id) >= count:
        return None
    if os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        names = {str(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)}
        if len(names) > 1:
            return None
    return nvml.nvmlDeviceGetHandleByIndex(int(device_id))


def nearest_cpus(device_ids: Sequence[str]) -> Optional[list[set[int]]]:
    """For each device, the cores NVML calls ideal for it (its NUMA node's, where the host has
    several); None when any one of them is not known."""
    nvml = _nvml()
    if nvml is None:
        return None
    # The mask comes in 64-bit words, enough for every configured CPU id (online or not).
    words = -(-max(os.sysconf("SC_NPROCESSORS_CONF"), max(os.sched_getaffinity(0)) + 1) // 64)
    out = []
    try:
        for device_id in device_ids:
            handle = _handle(nvml, str(device_id))
            if handle is None:
                return None
            mask = nvml.nvmlDeviceGetCpuAffinity(handle, words)
            out.append({64 * w + b for w, word in enumerate(mask) for b in range(64) if int(word) >> b & 1})
    except Exception:  # noqa: BLE001 - NVML without this query or without this device: unknown
        return None
    return out


def core_siblings(cpu: int) -> frozenset[int]:
    """The logical CPUs of `cpu`'s physical core (its hyperthreads), itself alone if unknown."""
    try:
        text = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
    except OSError:
        return frozenset({cpu})
    found: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return frozenset(found) or frozenset({cpu})


def _split(cores: Sequence[int], parts: int, siblings: Callable[[int], frozenset[int]] = core_siblings,
           ) -> list[list[int]]:
    """Disjoint shares of `cores`, contiguous by physical core: the hyperthreads of one core stay
    in one share (two jobs on the two halves of a core slow each other down). Where there are
    fewer physical cores than parts, CPU by CPU."""
    units: dict[frozenset[int], list[int]] = {}
    for cpu in sorted(cores):
        units.setdefault(siblings(cpu), []).append(cpu)
    groups = sorted(units.values())
    if len(groups) < parts:  # too few physical cores to keep siblings together
        groups = [[cpu] for cpu in sorted(cores)]
    # Where each share should end, counted in CPUs: as even as CPU counts allow, the first ones
    # one larger. A unit goes to the next share once it would cross half its size or more
    # past that end, or when the units left are only enough for one per later share.
    per, extra = divmod(len(cores), parts)
    ends = [sum(per + (j < extra) for j in range(i + 1)) for i in range(parts)]
    shares: list[list[int]] = [[] for _ in range(parts)]
    at, count = 0, 0
    for k, unit in enumerate(groups):
        if at < parts - 1 and shares[at] and (count + len(unit) / 2 >= ends[at] or len(groups) - k <= parts - at - 1):
            at += 1
        shares[at] += unit
        count += len(unit)
    return [sorted(share) for share in shares]


def cpu_shares(slots: int, cpus: Optional[Sequence[int]] = None,
               near: Optional[Sequence[Optional[set[int]]]] = None,
               siblings: Callable[[int], frozenset[int]] = core_siblings) -> tuple[Optional[list[list[int]]], str]:
    """Disjoint shares of the cores this process may use, one per slot, and how they were cut.

    With `near` (each slot's GPU-local cores), the slots near the same cores split those, so a
    job's host thread runs on its GPU's NUMA node; the shares stay even within each group. When
    the local sets overlap without being equal, leave a slot too few cores or are unknown, the
    cores are split evenly instead. None when there are fewer cores than slots."""
    available = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if len(available) < slots:
        return None, "fewer cores than devices"
    if near is not None and len(near) == slots and all(near):
        local = [frozenset(set(available) & set(n)) for n in near if n]
        groups: dict[frozenset, list[int]] = {}
        for slot, cores in enumerate(local):
            groups.setdefault(cores, []).append(slot)
        disjoint = all(a.isdisjoint(b) for a in groups for b in groups if a is not b)
        if disjoint and all(len(cores) >= len(members) for cores, members in groups.items()):
            shares: list[list[int]] = [[] for _ in range(slots)]
            for cores, members in groups.items():
                for slot, share in zip(members, _split(sorted(cores), len(members), siblings), strict=True):
                    shares[slot] = share
            if len(groups) == 1 and set(next(iter(groups))) == set(available):
                return shares, "split evenly"  # every core is as near to every GPU
            return shares, "from the cores nearest each GPU (NVML's CPU affinity)"
    return _split(available, slots, siblings), "split evenly"
