"""Data parallel teacher collection and evaluation across the processes of a `torchrun` launch.

Under one process every function here is a plain call. Under `torchrun --nproc_per_node K`
(read through `accelerate.PartialState`, which sets up the process group: gloo on CPUs, NCCL on
GPUs) each process takes a contiguous slice of the examples (`shard_indices`), computes it, and
the slices are gathered in rank order, so the result is the one-process result in the same
order: one teacher cache, written by rank 0, and one set of evaluation numbers.
"""

from __future__ import annotations

import os


def rank_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) outside a distributed launch."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        # cpu=True is what makes accelerate set up gloo for CPU processes (else it stays single)
        PartialState(cpu=not torch.cuda.is_available())
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    return rank_world()[0] == 0


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """The contiguous slice of range(n) that process `rank` of `world` takes. The slices of all
    ranks, in rank order, are range(n); their sizes differ by at most one."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return list(range(n * rank // world, n * (rank + 1) // world))


def gather_objects(obj, dst: int | None = None) -> list | None:
    """Every rank's `obj`, in rank order: on every rank (`dst` None) or only on rank `dst`
    (None elsewhere). Objects are pickled: keep tensors on the CPU."""
    rank, world = rank_world()
    if world == 1:
        return [obj]
    import torch.distributed as dist

    if dst is None:
        out = [None] * world
        dist.all_gather_object(out, obj)
        return out
    out = [None] * world if rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def broadcast_object(obj=None, src: int = 0):
    """Rank `src`'s `obj` on every rank."""
    if rank_world()[1] == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if rank_world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def load_or_build(cache, build, progress=None):
    """`cache.load_or_build(build, progress)` with the building split across processes.

    Rank 0 holds the cache (its lock, its reads and writes); each time it must build items it
    sends their indices to every rank, each rank builds its slice, and rank 0 gathers them in
    order and writes them. The other ranks then read the finished entry from the cache (a cache
    directory every process sees, as on one machine; where it is not shared they build it
    again alone, which is correct, only slower)."""
    rank, world = rank_world()
    if world == 1:
        return cache.load_or_build(build, progress)
    if rank == 0:
        def build_parallel(idx: list[int], bar) -> list:
            broadcast_object(("build", idx))
            mine = build([idx[i] for i in shard_indices(len(idx), 0, world)], bar)
            parts = gather_objects(mine, dst=0)
            if bar is not None:
                bar.update(len(idx) - len(mine))
            return [sig for part in parts for sig in part]

        out = cache.load_or_build(build_parallel, progress)
        broadcast_object(("done", None))
        return out
    while True:
        command, idx = broadcast_object()
        if command == "done":
            break
        gather_objects(build([idx[i] for i in shard_indices(len(idx), rank, world)], None), dst=0)
    return cache.load_or_build(build, None)


__all__ = ["rank_world", "is_main", "shard_indices", "gather_objects", "broadcast_object",
           "barrier", "load_or_build"]
