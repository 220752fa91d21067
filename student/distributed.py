"""Training in several processes (one per GPU, or `--devices N` CPU processes): who does what.

`distill train --devices N` starts itself N times under torchrun; `accelerate launch` or `torchrun` started by
hand work the same. The Trainer runs data-parallel (DDP); everything else is rank 0's: the run lock, removing
stale checkpoints, the outputs and the manifest. Ranks wait for each other (barriers) where one must finish
before the others read, and every rank returns the manifest rank 0 wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def start() -> None:
    """Join the process group (gloo on CPU, nccl on GPU) when launched as several processes; once."""
    if world_size() == 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def from_rank_zero(value: Any) -> Any:
    """Rank 0's `value` on every rank (an object that pickles); the value itself in a single process."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def per_device_batch(batch_size: int) -> int:
    """`student.batch_size` is the batch of one optimiser step, whatever the number of processes: each takes its
    share, so N processes train the same steps as one (and the same adapter, up to float rounding)."""
    processes = world_size()
    if batch_size % processes:
        from distill.errors import UserError

        raise UserError(f"student.batch_size={batch_size} does not split over {processes} processes; use a "
                        f"multiple of {processes}")
    return batch_size // processes


def torchrun_command(devices: int, argv: list[str]) -> list[str]:
    """This same `distill` command (`argv`, less its --devices option) as `devices` processes under torchrun."""
    rest, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--devices="):
            skip = False
            continue
        skip = arg == "--devices"
        if not skip:
            rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}",
            "-m", "distill.cli", *rest]


def check_devices(devices: int) -> None:
    """On a GPU machine each process needs a GPU of its own: NCCL cannot put two ranks on one."""
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else None
    if visible is not None and devices > visible:
        from distill.errors import UserError

        raise UserError(f"--devices {devices}: this machine shows {visible} GPU(s) (CUDA_VISIBLE_DEVICES); give "
                        f"--devices {visible} or fewer")


def relaunch(devices: int, argv: list[str]) -> int:
    """Run the command as `devices` processes; their exit code (torchrun stops them all if one fails)."""
    check_devices(devices)
    return subprocess.call(torchrun_command(devices, argv))
