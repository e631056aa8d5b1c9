"""The epoch a model keeps: best checkpoint and early stopping by the smoothed validation MRR."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from cellcube.config import Config
from cellcube.train.selection import MONITOR, SmoothedValidation

# a noisy validation curve: one lucky spike at epoch 1, a steadier good stretch at epochs 3-5
VAL_MRR = [0.10, 0.50, 0.10, 0.30, 0.35, 0.30, 0.10, 0.10, 0.10, 0.10]


class Scripted(L.LightningModule):
    """Logs the scripted ``val_mrr`` of each epoch; remembers the epoch in its weights."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("epoch_seen", torch.tensor(-1.0))

    def training_step(self, batch, batch_idx):
        self.epoch_seen.fill_(self.current_epoch)
        return (self.w * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val_mrr", VAL_MRR[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _kept_epoch(tmp_path, window: int, patience: int = 10) -> tuple[int, int]:
    """(epoch of the best checkpoint's weights, epochs run)."""
    data = DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)
    best = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor=MONITOR, mode="max")
    trainer = L.Trainer(
        max_epochs=len(VAL_MRR),
        callbacks=[
            SmoothedValidation(window),
            best,
            EarlyStopping(monitor=MONITOR, mode="max", patience=patience),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Scripted(), data, data)
    state = torch.load(best.best_model_path, weights_only=True)["state_dict"]
    return int(state["epoch_seen"]), trainer.current_epoch


def test_window_one_keeps_the_single_best_epoch(tmp_path):
    assert _kept_epoch(tmp_path, 1)[0] == 1  # the lucky spike


def test_window_three_keeps_the_end_of_the_best_stretch(tmp_path):
    # windows ending at epochs 1..5: 0.30, 0.233, 0.30, 0.25, 0.317 -> epoch 5
    assert _kept_epoch(tmp_path, 3)[0] == 5


def test_early_stopping_follows_the_smoothed_criterion(tmp_path):
    # window 1: best at epoch 1, stops after 4 epochs without a better value (epoch 5)
    assert _kept_epoch(tmp_path, 1, patience=4) == (1, 6)
    # window 3: improves again at epoch 5, so it runs on to the last epoch
    assert _kept_epoch(tmp_path / "w3", 3, patience=4) == (5, 10)


def test_history_round_trips_for_resume():
    cb = SmoothedValidation(3)
    cb.history = [0.1, 0.2]
    restored = SmoothedValidation(3)
    restored.load_state_dict(cb.state_dict())
    assert restored.history == [0.1, 0.2]


def test_window_is_validated_in_the_config():
    assert Config().train.select_window == 3
    with pytest.raises(ValueError):
        Config.model_validate({"train": {"select_window": 0}})
