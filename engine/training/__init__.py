"""Training: cross-validated folds (folds), the loop of one fold (fit) and its units:
settings, learning-rate and BatchNorm schedule, validation and thresholds, checkpointing and
resume, resumable state, loaders, history, multi-GPU (distributed), and the demo-model recipe."""
