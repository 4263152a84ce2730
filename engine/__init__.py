"""LUV-Net: model, checkpoints, data, training, evaluation and compiled backends."""
