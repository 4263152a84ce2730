"""Fixtures for stream tests: a tiny real checkpoint and a real mp4 written with OpenCV."""

from __future__ import annotations

import socket

import cv2
import numpy as np
import pytest
import torch

from luvnet.engine.model.checkpoint import save_checkpoint
from luvnet.engine.model.config import PreprocessConfig
from luvnet.engine.model.network import build_luvnet


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_luvnet("mobilenet_v3_small", fusion_hidden=32, classifier_hidden=16).eval()
    config = model.config.replace(
        preprocess=PreprocessConfig(image_size=64), thresholds=(0.5, 0.5, 0.5, 0.5)
    )
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny", config=config)


def write_video(path, frames: int, size=(120, 160), fps: float = 30.0, seed: int = 0):
    """A fan of changing speckle inside a static frame with text (what a scanner shows)."""
    rng = np.random.default_rng(seed)
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(frames):
        image = np.zeros((h, w, 3), np.uint8)
        image[h // 6 : h - 4, w // 5 : w - w // 5] = rng.integers(
            0, 255, (h - 4 - h // 6, w - 2 * (w // 5), 1), dtype=np.uint8
        )
        cv2.putText(image, "L1", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        writer.write(image)
    writer.release()
    return path


@pytest.fixture()
def short_video(tmp_path):
    return write_video(tmp_path / "scan.mp4", frames=45)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
