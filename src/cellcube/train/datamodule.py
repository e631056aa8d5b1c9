"""The training data as Lightning sees it: seeded, resumable, rank-sliced batches.

:class:`PairsDataModule` serves the embedded train split in batches drawn by
:class:`EpochSeededSampler` (a permutation per ``(seed, epoch)``) and the whole validation split
as one batch, each batch taken from the split's tensors in one indexing per tensor
(:class:`RowsDataset`) rather than row by row. Under torchrun every process holds both splits
(rank 0 embedded them and handed them over, :func:`cellcube.train.distributed.on_rank_zero`);
:meth:`PairsDataModule.setup` then gives this process its slice of every global batch, from the
rank and world size of Lightning's trainer.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from cellcube.embed.splits import EmbeddedSplit
from cellcube.train import distributed

__all__ = ["EpochSeededSampler", "PairsDataModule", "RowsDataset", "as_batch"]


class RowsDataset(TensorDataset):
    """A :class:`~torch.utils.data.TensorDataset` that fetches a whole batch at once.

    The :class:`~torch.utils.data.DataLoader` hands :meth:`__getitems__` the batch's row indices
    and gets ``[tensor[rows] for each tensor]``: the very batch that fetching the rows one by one
    and stacking them (the default collation) builds, in one indexing per tensor. Use it with
    ``collate_fn=``:func:`as_batch`.
    """

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        rows = torch.tensor(indices, dtype=torch.long)
        return [t[rows] for t in self.tensors]


def as_batch(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """The collation of a :class:`RowsDataset` batch: it is already one."""
    return batch


class EpochSeededSampler(Sampler[int]):
    """A random permutation per epoch drawn from ``(seed, epoch)``: reproducible and resumable.

    Alone (``world_size=1``) it yields the whole permutation. Under torchrun
    (:mod:`cellcube.train.distributed`) rank ``r`` of ``world_size`` yields, for each full global
    batch ``k`` of ``batch_size`` rows of that same permutation, its slice
    ``perm[k*B + r*b : k*B + (r+1)*b]`` (``b = B / world_size``; the incomplete last batch is
    dropped, as the single-process loader drops it): the ranks' slices, gathered in rank order,
    are exactly the single-process batches. Lightning calls :meth:`set_epoch` before each epoch.

    Args:
        n: rows of the split.
        seed: the run's seed (``seed``).
        batch_size: the GLOBAL batch (only used with ``world_size > 1``).
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self, n: int, seed: int, *, batch_size: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if world_size > 1 and (batch_size % world_size or not 0 < batch_size <= n):
            raise ValueError(f"batch_size={batch_size} cannot be split over {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.n, self.seed, self.epoch = n, seed, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        if self.world_size > 1:
            full, b = self.n // self.batch_size, self.batch_size // self.world_size
            perm = perm[: full * self.batch_size].view(full, self.world_size, b)[:, self.rank]
        return iter(perm.reshape(-1).tolist())

    def __len__(self) -> int:
        if self.world_size > 1:
            return self.n // self.batch_size * (self.batch_size // self.world_size)
        return self.n


class PairsDataModule(L.LightningDataModule):
    """Train batches ``(q, a, answer_ids, rows)`` and one validation batch ``(q, answer_ids)``.

    ``rows`` are the pairs' indices in the train split: the objective looks up mined negatives,
    curriculum and teacher weights by them. ``batch_size`` is the global batch
    (``train.batch_size``); alone, an incomplete last batch is dropped unless the split is
    smaller than one batch.

    Args:
        train: the embedded train split.
        val: the embedded validation split.
        batch_size: the global batch size.
        seed: seeds the batch order with the epoch (:class:`EpochSeededSampler`).
    """

    def __init__(self, train: EmbeddedSplit, val: EmbeddedSplit, batch_size: int, seed: int):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed = batch_size, seed
        self.sampler: EpochSeededSampler | None = None
        self.rank_batch = batch_size

    def setup(self, stage: str) -> None:
        """This process's share of every global batch (the whole batch alone)."""
        assert self.trainer is not None, "used by a Lightning Trainer"
        world, rank = self.trainer.world_size, self.trainer.global_rank
        self.rank_batch = distributed.check_batch_size(self.batch_size, len(self.train))
        self.sampler = EpochSeededSampler(
            len(self.train), self.seed, batch_size=self.batch_size, rank=rank, world_size=world
        )

    def train_dataloader(self) -> DataLoader:
        t = self.train
        assert self.sampler is not None, "setup() first"
        return DataLoader(
            RowsDataset(t.q, t.a, t.answer_ids, torch.arange(len(t))),
            batch_size=self.rank_batch,
            sampler=self.sampler,
            drop_last=self.sampler.world_size == 1 and len(t) > self.batch_size,
            collate_fn=as_batch,
        )

    def val_dataloader(self) -> DataLoader:
        val = RowsDataset(self.val.q, self.val.answer_ids)
        return DataLoader(val, batch_size=len(self.val), collate_fn=as_batch)
