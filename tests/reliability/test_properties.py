"""Property tests that complete the existing ones: the live frame path given any array at all.

Existing: tests/engine/data/test_preprocess.py::test_any_image_becomes_a_square_u8 (uint8/uint16,
1/3/4 channels) and ::test_any_video_gives_a_box_inside_it; the decoder's fuzzing in
tests/streamer/test_protocol.py (test_fuzz_*). Missing was the other side of the first one:
every dtype and rank a third-party source might hand over, with NaN, inf and extremes.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from luvnet.engine.data.preprocess import FramePreprocessor
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PreprocessConfig

DTYPES = [
    np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.float16,
    np.float32, np.float64, np.bool_, np.complex64, np.dtype(">u2"), np.dtype("<f8"),
]  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arrays(
        dtype=st.sampled_from(DTYPES),
        shape=array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12),
    ),
    st.integers(0, 3),
)
def test_any_array_is_a_square_u8_or_a_one_line_error(image: np.ndarray, calibrate: int):
    pre = FramePreprocessor(PreprocessConfig(image_size=32), calibrate_frames=calibrate)
    for i in range(2):  # twice: the second call runs with calibration state
        try:
            outs = [pre(image)]
            ready = pre.push(image, i) + (pre.flush() if i == 1 else [])
            outs += [pre.letterbox(torch.from_numpy(gray), box).numpy() for _, gray, box in ready]
        except LuvnetError as err:
            assert str(err).startswith("image: expected") and "\n" not in str(err), str(err)
            return
        assert all(out.shape == (32, 32) and out.dtype == np.uint8 for out in outs)
