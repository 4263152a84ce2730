"""Shared test settings: the CPU here has 2 cores shared with other work."""

import torch

torch.set_num_threads(1)
