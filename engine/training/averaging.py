"""``luvnet train --ema DECAY``: an exponential moving average of the weights, validated and
kept as ``best/`` in place of the weights being trained.

Polyak averaging (Polyak and Juditsky, SIAM J. Control Optim. 1992), in the form timm's
``ModelEma`` made standard: after every optimizer step ``w_ema = decay * w_ema + (1 - decay) *
w``, the first step copying ``w``. Training itself is unchanged (the same batches, the same
steps); only what is validated, kept and tested is the average. Why it is here: fine-tuning on
a few dozen patients learns them within a few epochs, and which epoch's weights are kept then
hangs on one noisy validation pass; an average over the last ``1 / (1 - decay)`` steps smooths
that choice. BatchNorm's running statistics are averaged with the weights (``use_buffers``), so
the average needs no pass of its own over the data.

The averaging is :class:`torch.optim.swa_utils.AveragedModel`'s; this module adds only what a
resumable run needs: its tensors by name for the saved state.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from luvnet.engine.model.network import LUVNet


class WeightAverage:
    """The moving average of ``model``'s parameters and buffers.

    Args:
        model: the network being trained (the average is a copy of it, on its device).
        decay: weight of the average against each new step, in (0, 1); the average spans
            about ``1 / (1 - decay)`` optimizer steps.
    """

    def __init__(self, model: LUVNet, decay: float) -> None:
        self.decay = decay
        self._averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )

    @property
    def module(self) -> LUVNet:
        """The averaged network, to validate and save like the trained one."""
        module = self._averaged.module
        assert isinstance(module, LUVNet)
        return module

    @property
    def steps(self) -> int:
        """Optimizer steps averaged so far."""
        return int(self._averaged.n_averaged.item())

    def update(self, model: LUVNet) -> None:
        """Fold in ``model``'s weights after an optimizer step (the first call copies them)."""
        self._averaged.update_parameters(model)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the average, by name (``n_averaged`` and ``module.<key>``)."""
        return dict(self._averaged.state_dict())

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` gave; strict, so a changed model is refused."""
        self._averaged.load_state_dict(tensors, strict=True)
