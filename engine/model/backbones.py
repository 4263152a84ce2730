"""Frame encoders: any torchvision classification trunk with its classifier removed.

The trunk maps [N, 3, H, W] to [N, D] (global pooling included). ``D`` is read from the
removed classifier, so no dummy forward pass is needed to learn the embedding width.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.weights import load_trunk_weights

# Attribute names torchvision uses for the final classifier, in lookup order.
_CLASSIFIER_ATTRS = ("fc", "classifier", "heads", "head")
# Models whose forward() is not a plain classification forward (detection, video, ...).
_EXCLUDED_PREFIXES = ("googlenet", "inception")


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_trunk` (torchvision image classifiers)."""
    names = tvm.list_models(module=tvm)
    return sorted(n for n in names if not n.startswith(_EXCLUDED_PREFIXES))


def _strip_classifier(model: nn.Module, name: str) -> int:
    """Replace the classifier by what precedes its first Linear; return that Linear's input."""
    for attr in _CLASSIFIER_ATTRS:
        head = getattr(model, attr, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential):
            for i, layer in enumerate(head):
                if isinstance(layer, nn.Linear):
                    kept = list(head)[:i]
                    setattr(model, attr, nn.Sequential(*kept) if kept else nn.Identity())
                    return layer.in_features
    raise LuvnetError(f"backbone {name!r}: no Linear classifier found to remove")


class Trunk(nn.Module):
    """A torchvision classifier without its classifier: frames -> pooled embeddings."""

    def __init__(self, name: str, model: nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.name = name
        self.body = model
        self.embed_dim = embed_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.body(frames), 1)


def create_trunk(name: str, weights: str | Path | None = None) -> Trunk:
    """Build the named trunk, randomly initialised or from a local torchvision weight file.

    ``weights``: None (random), ``"imagenet"`` (torchvision's file name under
    ``$TORCH_HOME/hub/checkpoints``) or a path to a ``.pth`` file. Never downloads.
    """
    if name not in list_backbones():
        raise LuvnetError(
            f"backbone: unknown {name!r}; expected a torchvision classifier such as "
            "densenet161, resnet50, resnet18 or mobilenet_v3_small"
        )
    model = tvm.get_model(name, weights=None)
    if weights is not None:
        load_trunk_weights(model, name, weights)
    embed_dim = _strip_classifier(model, name)
    if hasattr(model, "aux_logits"):
        model.aux_logits = False
    return Trunk(name, model, embed_dim)


def trunk_blocks(trunk: Trunk) -> list[nn.Module]:
    """The trunk's blocks in forward order: the body's top-level children, a plain
    ``nn.Sequential`` (torchvision's ``features``, ResNet's ``layer1``-``layer4``) opened one
    level, those without parameters left out. mobilenet_v3_small has 13 (its stem, 11
    inverted residuals, the last 1x1 conv), resnet18 10, densenet121 and densenet161 10,
    vit_b_16 2 (its encoder is one block).

    Torchvision registers modules in forward order for these classifiers. Like its detection
    backbones' ``trainable_backbone_layers``, counted from the output end, but per block.
    """
    blocks: list[nn.Module] = []
    for child in trunk.body.children():
        parts = list(child.children()) if type(child) is nn.Sequential else [child]
        blocks += [part for part in parts if any(True for _ in part.parameters())]
    return blocks


def freeze_trunk(trunk: Trunk, trainable_blocks: int | None) -> list[nn.Module]:
    """Fix all but the trunk's last ``trainable_blocks`` blocks (:func:`trunk_blocks`): no
    gradient. Returns the fixed modules, which training keeps in eval mode so that their
    BatchNorm statistics stay as initialised too. ``None``: nothing fixed; 0: the whole
    trunk (``--freeze-encoder``).

    Raises:
        LuvnetError: ``trainable_blocks`` above the trunk's block count (``--trainable-blocks``).
    """
    if trainable_blocks is None:
        return []
    blocks = trunk_blocks(trunk)
    if trainable_blocks > len(blocks):
        raise LuvnetError(
            f"--trainable-blocks: {trunk.name} has {len(blocks)} blocks; expected "
            f"1..{len(blocks)}, got {trainable_blocks}"
        )
    if trainable_blocks == 0:
        return [trunk.eval().requires_grad_(False)]
    frozen = blocks[: len(blocks) - trainable_blocks]
    for block in frozen:
        block.eval().requires_grad_(False)
    if frozen:  # what the body holds itself (ViT's class token) goes with the first block
        for parameter in trunk.body.parameters(recurse=False):
            parameter.requires_grad_(False)
    return frozen
