"""Training with Lightning: the module, the run directory, checkpoints and resume."""
