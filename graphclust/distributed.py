"""Multi-process training with ``torch.distributed``: one context object and a few collectives.

Launch any number of processes with torchrun (one per GPU, or a few on a CPU machine)::

    torchrun --nproc-per-node 2 -m graphclust train DATA --model dgg -o runs/x

Every process loads the data, holds the whole feature matrix and the whole graph, and builds
the same model; :func:`init_distributed` reads the launcher's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), joins the process group
(``gloo`` on CPU, ``nccl`` on CUDA with one GPU per process, ``cuda:LOCAL_RANK``) and
returns a :class:`DistContext`. Training code takes that context (or ``None`` for one
process) and uses its methods: :meth:`DistContext.shard` splits rows or anchors,
:meth:`DistContext.all_reduce_sum` / :meth:`DistContext.all_reduce_metrics` combine
statistics, :meth:`DistContext.all_gather_rows` rebuilds a full array from row shards, and
:meth:`DistContext.run_on_main` runs a side effect (pretraining a stage, writing a file) on
rank 0 only and hands its result - or its exception - to every rank.

The context is a plain value: no state lives here beyond ``torch.distributed``'s own process
group, and :func:`shutdown` destroys that group only when :func:`init_distributed` created it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from graphclust.utils import GraphclustError, resolve_device

__all__ = [
    "DistContext",
    "init_distributed",
    "is_main",
    "launched_by_torchrun",
    "shard_bounds",
    "shutdown",
]

T = TypeVar("T")

#: environment variables torchrun (``torch.distributed.run``) sets for every worker
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous rows ``[lo, hi)`` of ``rank`` when ``n`` rows are split over ``world_size``.

    Shards differ in size by at most one row, cover ``0 .. n-1`` exactly once, in rank
    order, and may be empty when ``n < world_size``.
    """
    return (n * rank) // world_size, (n * (rank + 1)) // world_size


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a ``torch.distributed`` job.

    Attributes
    ----------
    rank : int
        Global rank, ``0 .. world_size-1``; rank 0 writes files and reports.
    world_size : int
        Number of processes.
    local_rank : int
        Rank on this machine (selects the GPU).
    device : torch.device
        This process's device: ``cpu`` or ``cuda:local_rank``.
    backend : str
        ``"gloo"`` or ``"nccl"``.
    owns_group : bool
        Whether :func:`init_distributed` created the process group (and :func:`shutdown`
        destroys it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    owns_group: bool = True

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` rows (see :func:`shard_bounds`)."""
        return slice(*shard_bounds(n, self.rank, self.world_size))

    def barrier(self) -> None:
        """Wait until every rank got here."""
        dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks; returns a new tensor on ``values``' device and dtype."""
        buf = values.detach().to(self.device, copy=True)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf.to(values.device)

    def all_reduce_metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Sum scalar metrics (e.g. a loss total and a count) over ranks, in float64."""
        keys = sorted(metrics)
        vec = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
        total = self.all_reduce_sum(vec)
        return {k: float(v) for k, v in zip(keys, total.tolist())}

    def all_gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Concatenate every rank's row shard (from :meth:`shard` of ``n``) in rank order.

        Parameters
        ----------
        local : Tensor of shape (n_local, ...)
            This rank's rows ``shard(n)``.
        n : int
            Total rows.

        Returns
        -------
        Tensor of shape (n, ...), the same on every rank, on ``local``'s device.
        """
        sizes = [hi - lo for lo, hi in (shard_bounds(n, r, self.world_size)
                                        for r in range(self.world_size))]
        if local.shape[0] != sizes[self.rank]:
            raise GraphclustError(
                f"rank {self.rank} holds {local.shape[0]} rows but its shard of {n} has "
                f"{sizes[self.rank]}; pass the rows of DistContext.shard(n)"
            )
        width = max(sizes)
        buf = local.new_zeros((width, *local.shape[1:]), device=self.device)
        buf[: local.shape[0]] = local.to(self.device)
        parts = [torch.empty_like(buf) for _ in range(self.world_size)]
        dist.all_gather(parts, buf)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(local.device)

    def broadcast_object(self, obj: Any = None) -> Any:
        """Rank 0's picklable ``obj`` on every rank (other ranks' argument is ignored)."""
        box = [_to_cpu(obj) if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return obj if self.is_main else box[0]

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank.

        An exception raised by ``fn`` is re-raised on every rank (other ranks get a copy
        marked ``raised_on_rank = 0``, so that only rank 0 reports it), so no rank is left
        waiting at a collective when rank 0 fails. The result must be picklable; tensors
        travel through the CPU.
        """
        if self.is_main:
            try:
                value, failure = fn(), None
            except Exception as exc:  # noqa: BLE001 - handed to the other ranks, re-raised here
                value, failure = None, exc
            self.broadcast_object(("error", failure) if failure is not None else ("ok", value))
            if failure is not None:
                raise failure
            return value
        status, payload = self.broadcast_object(None)
        if status == "error":
            try:
                payload.raised_on_rank = 0
            except AttributeError:  # pragma: no cover - exotic exception types
                pass
            raise payload
        return payload


def _to_cpu(obj: Any) -> Any:
    """Move the tensors of (nested dicts / lists / tuples of) ``obj`` to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by torchrun (its worker environment is set)."""
    env = os.environ if environ is None else environ
    return all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(device: str | torch.device | None = "auto", backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by torchrun's environment.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or torch.device
        Resolved by :func:`graphclust.utils.resolve_device`; CUDA becomes
        ``cuda:LOCAL_RANK`` (one GPU per process).
    backend : {"gloo", "nccl"}, optional
        Default: ``nccl`` on CUDA, ``gloo`` on CPU.
    timeout_s : float
        How long a collective waits for the other ranks before failing.

    Returns
    -------
    DistContext

    Raises
    ------
    GraphclustError
        Outside torchrun, on a device that cannot be shared this way, or when the backend is
        missing from this torch build.
    """
    if not launched_by_torchrun():
        missing = [k for k in TORCHRUN_ENV if k not in os.environ]
        raise GraphclustError(
            f"distributed training needs the environment torchrun sets (missing: "
            f"{', '.join(missing)}); launch with `torchrun --nproc-per-node N -m graphclust "
            "train ...`, or drop --distributed for one process"
        )
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise GraphclustError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({exc})") from None
    if not (world >= 1 and 0 <= rank < world and local >= 0):
        raise GraphclustError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    dev = resolve_device(device)
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise GraphclustError(
                f"LOCAL_RANK={local} needs GPU {local}, but this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = backend or "nccl"
    elif dev.type == "cpu":
        backend = backend or "gloo"
    else:
        raise GraphclustError(
            f"distributed training runs on cpu (gloo) or cuda (nccl), not {dev.type}; "
            "pass --device cpu or cuda"
        )
    available = {"gloo": dist.is_gloo_available(), "nccl": dist.is_nccl_available()}
    if not available.get(backend, False):
        raise GraphclustError(
            f"the torch.distributed backend {backend!r} is not available in this torch build "
            f"(available: {[b for b, ok in available.items() if ok] or 'none'})"
        )
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    elif (dist.get_rank(), dist.get_world_size()) != (rank, world):
        raise GraphclustError(
            f"a process group with rank {dist.get_rank()} of {dist.get_world_size()} exists "
            f"already, but the environment says rank {rank} of {world}"
        )
    return DistContext(rank, world, local, dev, str(dist.get_backend()), owns)


def shutdown(ctx: DistContext | None, barrier: bool = True) -> None:
    """Destroy the process group if ``ctx`` created it (safe to call twice, or with None).

    With ``barrier`` every rank first waits for the others, so no rank tears gloo down while a
    peer is still in a collective (that can abort the peer). Pass False on an error path, where
    a peer may never arrive.
    """
    if ctx is not None and ctx.owns_group and dist.is_available() and dist.is_initialized():
        if barrier and ctx.world_size > 1:
            dist.barrier()
        dist.destroy_process_group()


def is_main(ctx: DistContext | None = None) -> bool:
    """Whether this process reports and writes files.

    With a context: its rank is 0. Without: the process group's rank is 0, or - outside a
    process group - the launcher's ``RANK`` is 0 or unset (one process).
    """
    if ctx is not None:
        return ctx.is_main
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"
