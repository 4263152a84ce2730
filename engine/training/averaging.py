"""``luvnet train --ema DECAY``: an exponential moving average of the weights, validated and
kept as ``best/`` in place of the weights being trained.

Polyak averaging (Polyak and Juditsky, SIAM J. Control Optim. 1992) in its exponential form:
after every optimizer step ``w_ema = decay * w_ema + (1 - decay) * w``, the first step copying
``w`` (as ``torch.optim.swa_utils.get_ema_multi_avg_fn`` does). Training itself is unchanged
(the same batches, the same steps); only what is validated, kept and tested is the average.
Why it is here: fine-tuning on a few dozen patients learns them within a few epochs, and which
epoch's weights are kept then hangs on one noisy validation pass; an average over the last
``1 / (1 - decay)`` steps smooths that choice.

What is averaged: the parameters that train and the floating-point buffers of the modules
that own them (BatchNorm's running statistics, so the average needs no pass of its own over
the data). Not ``AveragedModel`` itself, for two reasons: it averages every tensor, so a frozen
DenseNet-161 trunk under ``--freeze-encoder`` would cost more per step than the head it trains,
and it blends integer buffers in float and truncates them (BatchNorm's ``num_batches_tracked``
drifts by one), which would change a frozen trunk's digest and so its embedding cache key.
Integer buffers are copied from the trained model; frozen tensors stay as initialised.
"""

from __future__ import annotations

import copy

import torch

from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.network import LUVNet


class WeightAverage:
    """The moving average of ``model``'s trained weights.

    Args:
        model: the network being trained, its frozen parts already frozen
            (``requires_grad`` False); the average is a copy of it, on its device.
        decay: weight of the average against each new step, in (0, 1); the average spans
            about ``1 / (1 - decay)`` optimizer steps.
    """

    def __init__(self, model: LUVNet, decay: float) -> None:
        self.decay = decay
        self.module: LUVNet = copy.deepcopy(model)  # what is validated and saved
        self.module.requires_grad_(False)
        self.averaged, self.copied = _trained_tensors(model)  # names, in state_dict order
        self.steps = 0  # optimizer steps averaged so far

    def update(self, model: LUVNet) -> None:
        """Fold in ``model``'s weights after an optimizer step (the first call copies them)."""
        ours, theirs = self.module.state_dict(), model.state_dict()
        with torch.no_grad():
            for name in self.averaged:
                if self.steps == 0:
                    ours[name].copy_(theirs[name])
                else:
                    ours[name].lerp_(theirs[name], 1.0 - self.decay)
            for name in self.copied:
                ours[name].copy_(theirs[name])
        self.steps += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged tensors by name, and ``steps`` as a 0-d int64 tensor."""
        ours = self.module.state_dict()
        kept = {name: ours[name] for name in (*self.averaged, *self.copied)}
        return kept | {"steps": torch.tensor(self.steps, dtype=torch.int64)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` gave.

        Raises:
            LuvnetError: the tensors are not this model's averaged ones (a damaged state).
        """
        expected = {*self.averaged, *self.copied, "steps"}
        if set(tensors) != expected:
            missing = sorted(expected - set(tensors))[:3]
            raise LuvnetError(
                f"the saved weight average holds {len(tensors)} tensors, this model averages "
                f"{len(expected)} (missing e.g. {missing}): a damaged training state"
            )
        ours = self.module.state_dict()
        with torch.no_grad():
            for name in (*self.averaged, *self.copied):
                ours[name].copy_(tensors[name])
        self.steps = int(tensors["steps"].item())


def _trained_tensors(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(names to average, names to copy): the trainable parameters and the floating-point
    buffers of the modules owning one; the integer buffers of those modules."""
    averaged: list[str] = []
    copied: list[str] = []
    for prefix, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not any(p.requires_grad for _, p in own):
            continue  # frozen (or holds no parameter): stays as initialised
        dot = f"{prefix}." if prefix else ""
        averaged += [dot + name for name, p in own if p.requires_grad]
        for name, buffer in module.named_buffers(recurse=False):
            target = averaged if buffer.is_floating_point() else copied
            target.append(dot + name)
    return averaged, copied
