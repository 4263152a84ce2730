"""The one place trunk weights are found and loaded: local files only, never a download."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from luvnet.engine.errors import LuvnetError

# Old torchvision DenseNet files use keys like "norm.1" where the module says "norm1".
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def torchvision_file_name(name: str) -> str:
    """The file name torchvision would download for the default weights of ``name``."""
    try:
        url = tvm.get_model_weights(name).DEFAULT.url
    except (ValueError, AttributeError) as err:
        raise LuvnetError(f"backbone {name!r} has no torchvision ImageNet weights") from err
    return url.rsplit("/", 1)[-1]


def torch_hub_checkpoint_dir() -> Path:
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints"


def resolve_weights_path(name: str, weights: str | Path) -> Path:
    """``"imagenet"`` -> the torchvision file under $TORCH_HOME; anything else is a path."""
    if str(weights) == "imagenet":
        path = torch_hub_checkpoint_dir() / torchvision_file_name(name)
        if not path.is_file():
            raise LuvnetError(
                f"ImageNet weights for {name} not found: put {path.name} in {path.parent} "
                "(set $TORCH_HOME to change the folder) or pass --weights PATH; "
                "luvnet never downloads weights"
            )
        return path
    path = Path(weights)
    if not path.is_file():
        raise LuvnetError(
            f"--weights: file {path} not found; expected a torchvision state dict such as "
            f"{torchvision_file_name(name)}"
        )
    return path


def _rename_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        match = _DENSENET_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        renamed[key] = value
    return renamed


def load_trunk_weights(model: nn.Module, name: str, weights: str | Path) -> None:
    """Load a torchvision state dict strictly; missing/unexpected keys are named."""
    path = resolve_weights_path(name, weights)
    try:
        # weights_only: a .pth is a pickle; never let it run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means "not a weight file"
        raise LuvnetError(
            f"--weights {path}: not a loadable torchvision state dict ({err})"
        ) from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LuvnetError(f"--weights {path}: expected a state dict, got {type(state).__name__}")
    result = model.load_state_dict(_rename_keys(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise LuvnetError(
            f"--weights {path} does not fit {name}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
