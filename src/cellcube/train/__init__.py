"""Training with Lightning: the module, the loop, checkpoints, guards, data parallelism."""
