"""One rank of the two-process gradient check in ``tests/test_ddp.py`` (run as a script).

``python tests/ddp_worker.py STORE OUT RANK`` joins a 2-process gloo group through the file
``STORE`` and computes, for the same linear model and batch, the parameter gradients of

* ``ref``: one process, the whole batch (what the DDP run must reproduce);
* ``gathered``: DDP, each rank's rows, the global batch reassembled by
  :func:`cellcube.train.distributed.gather_batch` through Lightning's ``DDPStrategy.all_gather``
  (what :class:`~cellcube.train.module.MapperModule` calls under torchrun);
* ``local``: DDP, each rank's loss on its own rows only;
* ``naive``: DDP, gathered without gradients for the other ranks' rows.

It also checks :func:`cellcube.train.distributed.on_rank_zero` (a result and an error of rank 0
reach every rank). Rank 0 writes the largest gradient differences and what each rank saw to
``OUT`` as JSON.
"""

from __future__ import annotations

import copy
import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel

from cellcube.config import LossConfig
from cellcube.errors import CellcubeError, DataError
from cellcube.objectives.losses import build_loss
from cellcube.train import distributed

B, D, K = 8, 6, 3


def grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def fail() -> None:
    raise DataError("pairs.jsonl:7: field 'answer' is empty")


def main(store: str, out_path: str, rank: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    world = dist.get_world_size()
    torch.manual_seed(0)
    q, a = torch.randn(B, D), torch.randn(B, D)
    ids = torch.tensor([0, 1, 2, 0, 3, 4, 5, 1])  # duplicate answers 0 and 1
    neg, neg_ids = torch.randn(B, K, D), torch.randint(0, 8, (B, K))
    weights = torch.tensor([1.0, 1, 0, 1, 1, 0, 1, 1])  # curriculum-style row weights
    loss = build_loss(LossConfig(infonce=1, cosine=1, mse=1, triplet=1, diversity=1))
    base = torch.nn.Linear(D, D)

    ref = copy.deepcopy(base)  # one process, the whole batch
    loss(ref(q), a, ids, neg, neg_ids, weights)[0].backward()

    b = B // world
    mine = torch.arange(B)[rank * b : (rank + 1) * b]
    ours = copy.deepcopy(base)  # DDP + distributed.gather_batch (Lightning's all_gather)
    ddp_ours = DistributedDataParallel(ours)  # (the wrapper must outlive backward)
    pred, ga, gids, rows = distributed.gather_batch(
        DDPStrategy(), ddp_ours(q[mine]), a[mine], ids[mine], mine
    )
    loss(pred, ga, gids, neg[rows], neg_ids[rows], weights[rows])[0].backward()

    local = copy.deepcopy(base)  # DDP, each rank's own rows only
    ddp_local = DistributedDataParallel(local)
    local_loss = loss(
        ddp_local(q[mine]), a[mine], ids[mine], neg[mine], neg_ids[mine], weights[mine]
    )
    local_loss[0].backward()

    naive = copy.deepcopy(base)  # gathered, but the other ranks' rows carry no gradient
    ddp_naive = DistributedDataParallel(naive)
    p = ddp_naive(q[mine])
    parts = [torch.empty_like(p) for _ in range(world)]
    dist.all_gather(parts, p.detach())
    parts[rank] = p
    loss(torch.cat(parts), a, ids, neg, neg_ids, weights)[0].backward()

    try:  # a rank-0 error reaches every rank
        distributed.on_rank_zero(fail)
        outcome = "no error"
    except CellcubeError as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    shared = distributed.on_rank_zero(lambda: {"from rank": rank})
    seen: list[object] = [None] * world
    dist.all_gather_object(seen, [outcome, shared, rows.tolist()])

    if rank == 0:
        r = grads(ref)
        out = {
            name: (grads(m) - r).abs().max().item()
            for name, m in [("gathered", ours), ("local", local), ("naive", naive)]
        }
        out["naive_times_world"] = (grads(naive) * world - r).abs().max().item()
        out["ref_max"] = r.abs().max().item()
        out["seen"] = seen
        Path(out_path).write_text(json.dumps(out))
    # DDP's reducers must go while the process group still exists: freed later (when main's
    # frame is torn down, after destroy_process_group) one could hang in its destructor
    del ddp_ours, ddp_local, ddp_naive
    gc.collect()
    dist.barrier()  # leave together: a rank tearing down alone can leave its peer waiting
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
