"""The incremental streaming head equals ``head`` on every window of a long sequence."""

from __future__ import annotations

import pytest
import torch

from luvnet.engine.model.config import MODEL_VARIANTS
from luvnet.engine.model.incremental import EmbeddingWindow, IncrementalHead, tap_products
from luvnet.engine.model.network import VARIANT_BUILDERS
from tests.engine.model.test_model import randomize_batchnorm


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_incremental_equals_head_on_every_window(variant):
    torch.manual_seed(0)
    model = VARIANT_BUILDERS[variant]("resnet18").eval()
    randomize_batchnorm(model)
    state = IncrementalHead(model)
    embeddings = torch.randn(100, model.embed_dim)
    worst = 0.0
    with torch.no_grad():
        for i in range(100):
            logits, attention = state.push(embeddings[i])
            window = embeddings[max(0, i - 29) : i + 1].unsqueeze(0)
            ref_logits, ref_attention = model.head(window)
            assert attention.shape == ref_attention[0].shape, f"frame {i}"
            worst = max(
                worst,
                (logits - ref_logits[0]).abs().max().item(),
                (attention - ref_attention[0]).abs().max().item(),
            )
            assert state.fill == min(i + 1, 30)
    assert worst <= 1e-4, f"max abs difference {worst} > 1e-4"


def test_incremental_multiplies_only_the_new_frame():
    """The Conv1d work per push is k*D*D multiply-adds: one frame's share of the window's."""
    model = VARIANT_BUILDERS["luvnet"]("resnet18").eval()
    state = IncrementalHead(model)
    k, d = model.config.kernel_size, model.embed_dim
    assert state.tap_matrix.shape == (k * d, d), "one [k*D, D] matmul per new frame"


def test_states_of_one_model_share_the_tap_matrix_until_its_weights_change():
    """``luvnet serve`` holds one state per stream over one model: one [k*D, D] matrix for all;
    weights changed in place (a loaded state dict) give a new one, so no state scores on stale
    weights."""
    torch.manual_seed(0)
    model = VARIANT_BUILDERS["luvnet"]("resnet18").eval()
    first, second = IncrementalHead(model), IncrementalHead(model)
    assert first.tap_matrix.data_ptr() == second.tap_matrix.data_ptr()
    with torch.no_grad():
        model.clip_head.temporal.conv.weight.mul_(2.0)
    third = IncrementalHead(model)
    assert third.tap_matrix.data_ptr() != first.tap_matrix.data_ptr()
    embeddings = torch.randn(35, model.embed_dim)
    with torch.no_grad():
        for e in embeddings:
            logits, _ = third.push(e)
        ref, _ = model.head(embeddings[-30:].unsqueeze(0))
    assert torch.allclose(logits, ref[0], atol=1e-4)


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_tap_products_batched_across_streams_give_the_same_scores(variant):
    """``luvnet serve`` computes the tap products of a request's frames (several streams) in
    one product; each stream's state fed them scores as if it had computed its own."""
    torch.manual_seed(0)
    model = VARIANT_BUILDERS[variant]("resnet18").eval()
    randomize_batchnorm(model)
    streams = 3
    embeddings = torch.randn(40, streams, model.embed_dim)
    own = [IncrementalHead(model) for _ in range(streams)]
    fed = [IncrementalHead(model) for _ in range(streams)]
    worst = 0.0
    with torch.no_grad():
        for frames in embeddings:  # one request: frame t of every stream
            taps = tap_products(model, frames)
            if variant == "luvnet":
                assert taps is not None
                assert taps.shape == (streams, model.config.kernel_size, model.embed_dim)
            else:
                assert taps is None, "only LUV-Net's head has a temporal branch"
            for s in range(streams):
                want, want_attention = own[s].push(frames[s])
                got, attention = fed[s].push(frames[s], None if taps is None else taps[s])
                worst = max(worst, (got - want).abs().max().item())
                assert torch.equal(attention, want_attention)
    assert worst <= 1e-5, f"max abs difference {worst} > 1e-5"


def test_reset_starts_a_new_window():
    model = VARIANT_BUILDERS["luvnet"]("resnet18").eval()
    state = IncrementalHead(model)
    embeddings = torch.randn(40, model.embed_dim)
    for e in embeddings:
        state.push(e)
    state.reset()
    logits, _ = state.push(embeddings[0])
    with torch.no_grad():
        ref, _ = model.head(embeddings[:1].unsqueeze(0))
    assert state.fill == 1
    assert torch.allclose(logits, ref[0], atol=1e-5)
    # The new window reuses the update plans of the first one: still the head's windows.
    for i in range(1, 40):
        logits, _ = state.push(embeddings[i])
        with torch.no_grad():
            ref, _ = model.head(embeddings[max(0, i - 29) : i + 1].unsqueeze(0))
        assert torch.allclose(logits, ref[0], atol=1e-4), f"frame {i} after the reset"


def test_needs_eval_mode():
    model = VARIANT_BUILDERS["luvnet"]("resnet18").train()
    with pytest.raises(ValueError, match="eval"):
        IncrementalHead(model)


def test_window_is_one_contiguous_view_oldest_first_through_wraps_and_resets():
    window = EmbeddingWindow(4, 2, device=torch.device("cpu"), dtype=torch.float32)
    for i in range(11):
        window.push(torch.tensor([float(i), -float(i)]))
        newest = list(range(max(0, i - 3), i + 1))
        assert window.ordered()[:, 0].tolist() == newest
        assert window.padded().shape == (4, 2) and window.padded().is_contiguous()
        assert window.padded().data_ptr() == window.ordered().data_ptr()
    window.reset()
    window.push(torch.tensor([100.0, 0.0]))
    assert window.fill == 1 and window.padded()[0, 0].item() == 100.0
    assert window.ordered()[:, 0].tolist() == [100.0]
