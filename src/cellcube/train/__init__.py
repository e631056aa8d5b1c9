"""Training with Lightning: ``fit`` (the Trainer), ``module`` (the LightningModule),
``datamodule`` (batches), ``checkpoints`` (safe checkpoint files), ``guards``, ``distributed``."""
