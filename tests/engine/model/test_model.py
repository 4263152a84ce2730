"""Contract tests over every variant and backbone (timm tests/test_models.py style)."""

from __future__ import annotations

import pytest
import torch

from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import MODEL_VARIANTS, ModelConfig
from luvnet.engine.model.network import VARIANT_BUILDERS, build_luvnet, build_model

SMALL_BACKBONES = {"resnet18": 512, "mobilenet_v3_small": 576}


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial eval statistics so BatchNorm is not an identity in the tests."""
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)


@pytest.fixture(scope="module", params=list(MODEL_VARIANTS))
def small_model(request):
    torch.manual_seed(0)
    model = VARIANT_BUILDERS[request.param]("resnet18").eval()
    randomize_batchnorm(model)
    return model


@pytest.mark.parametrize("backbone,width", SMALL_BACKBONES.items())
def test_embedding_width_is_declared_width(backbone, width):
    model = build_luvnet(backbone).eval()
    with torch.no_grad():
        emb = model.embed(torch.randn(3, 3, 64, 64))
    assert model.embed_dim == width, f"expected declared width {width}, got {model.embed_dim}"
    assert emb.shape == (3, width), f"expected (3, {width}), got {tuple(emb.shape)}"


def test_head_shapes(small_model):
    emb = torch.randn(2, 30, small_model.embed_dim)
    with torch.no_grad():
        logits, attention = small_model.head(emb)
    assert logits.shape == (2, 4), f"expected (2, 4), got {tuple(logits.shape)}"
    assert attention.shape[:3] == (2, 4, 30), f"got {tuple(attention.shape)}"
    sums = attention.sum(dim=2)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5), "attention must sum to 1"


def test_forward_is_head_of_embed(small_model):
    clip = torch.randn(2, 6, 3, 64, 64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.no_grad():
        logits, attention = small_model(clip, mask)
        emb = small_model.embed(clip.flatten(0, 1)).reshape(2, 6, -1)
        logits2, attention2 = small_model.head(emb, mask)
    assert torch.equal(logits, logits2), f"max diff {(logits - logits2).abs().max()}"
    assert torch.equal(attention, attention2)


def test_masking_equals_shorter_clip(small_model):
    """A 30-frame clip whose last 10 frames are masked scores like the 20-frame clip."""
    emb = torch.randn(1, 30, small_model.embed_dim)
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[:, 20:] = False
    with torch.no_grad():
        masked, masked_attn = small_model.head(emb, mask)
        short, short_attn = small_model.head(emb[:, :20])
    diff = (masked - short).abs().max().item()
    assert diff <= 1e-5, f"masked vs 20-frame logits differ by {diff}"
    assert torch.allclose(masked_attn[:, :, :20], short_attn, atol=1e-6)
    assert masked_attn[:, :, 20:].abs().max() == 0, "padded frames got attention"


def test_padding_content_is_ignored(small_model):
    emb = torch.randn(1, 30, small_model.embed_dim)
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[:, 25:] = False
    other = emb.clone()
    other[:, 25:] = torch.randn(1, 5, small_model.embed_dim) * 100
    with torch.no_grad():
        a, _ = small_model.head(emb, mask)
        b, _ = small_model.head(other, mask)
    assert torch.allclose(a, b, atol=1e-5), "masked frames leaked into the logits"


def test_frame_baseline_is_max_over_frames():
    model = VARIANT_BUILDERS["frame"]("resnet18").eval()
    emb = torch.randn(1, 10, model.embed_dim)
    with torch.no_grad():
        logits, _ = model.head(emb)
        per_frame = model.clip_head.classifier(emb)
    assert torch.allclose(logits, per_frame.max(dim=1).values)


def test_usvn_shares_one_query_set():
    model = VARIANT_BUILDERS["usvn"]("resnet18")
    assert model.clip_head.attention.queries.shape[0] == 1


def test_train_mode_masked_batchnorm_runs():
    model = build_luvnet("resnet18").train()
    emb = torch.randn(4, 30, model.embed_dim, requires_grad=True)
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[0, 12:] = False
    logits, _ = model.head(emb, mask)
    logits.sum().backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()
    assert emb.grad[0, 12:].abs().max() == 0, "padded frames must get no gradient"


@pytest.mark.parametrize(
    "backbone,paper_params",
    [("densenet161", 135.99e6), ("resnet50", 121.03e6)],
)
def test_parameter_counts_match_paper(backbone, paper_params):
    model = build_luvnet(backbone)
    total = sum(p.numel() for p in model.parameters())
    assert abs(total - paper_params) / paper_params < 0.005, (
        f"expected within 0.5% of {paper_params / 1e6:.2f} M, got {total / 1e6:.2f} M"
    )


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(LuvnetError, match="backbone"):
        build_model(ModelConfig(backbone="not_a_net"))


def test_config_rejects_bad_variant():
    with pytest.raises(ValueError, match="variant"):
        ModelConfig(variant="transformer")
