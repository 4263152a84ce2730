"""Backends: parity with eager for every backend this machine can run, and one-line errors.

Backends this machine cannot run (CUDA paths, TensorRT; onnxruntime when not installed)
skip with the reason. Speed is never asserted.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from luvnet.engine.backends import BACKEND_NAMES, TOLERANCES, ParityError, Tolerance, create_backend
from luvnet.engine.backends.auto import CPU_CANDIDATES
from luvnet.engine.backends.cache import model_fingerprint
from luvnet.engine.backends.factory import load_verified, make_spec
from luvnet.engine.backends.parity import reference_outputs
from luvnet.engine.backends.tensorrt import compile_options, precision_options
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from luvnet.engine.model.network import build_luvnet, build_model
from tests.engine.model.test_model import randomize_batchnorm

SIZE = 64
WINDOW = 30
HAS_CUDA = torch.cuda.is_available()
# The onnxruntime backend exports first, which needs the onnx package too.
HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None

needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none on this machine)")
needs_ort = pytest.mark.skipif(
    not HAS_ORT, reason="onnx/onnxruntime not installed (pip install 'luvnet[onnx]')"
)
needs_trt = pytest.mark.skipif(
    not (HAS_CUDA and HAS_TRT), reason="needs a CUDA GPU and torch-tensorrt"
)

CPU_BACKENDS = [
    "eager",
    pytest.param("inductor", marks=pytest.mark.slow),
    pytest.param("onnxruntime", marks=needs_ort),
]


def small_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_luvnet("resnet18", kernel_size=5, fusion_hidden=64).eval()
    randomize_batchnorm(model)
    return model


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("luvnet-cache")


@pytest.fixture(scope="module")
def backends(model, cache_dir):
    """One backend per name, built once for the module (inductor compiles are slow)."""
    made = {}

    def get(name: str, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in made:
            made[key] = create_backend(
                name, model, image_size=SIZE, window=WINDOW, cache_dir=cache_dir, **kwargs
            )
        return made[key]

    return get


def random_inputs(seed: int, embed_dim: int):
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randn(1, 3, SIZE, SIZE, generator=gen)
    window = torch.rand(1, WINDOW, embed_dim, generator=gen) * 2
    padded = torch.ones(1, WINDOW, dtype=torch.bool)
    padded[:, 11:] = False
    return frames, window, padded


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_cpu_backend_matches_eager_model(name, model, backends):
    backend = backends(name)
    info = backend.info
    assert (info.name, info.device, info.precision) == (name, "cpu", "fp32")
    assert info.parity is not None and info.parity.ok, info.parity
    assert info.parity.logits <= TOLERANCES["fp32"].logits
    # An input the parity check never saw, full and padded window.
    frames, window, padded = random_inputs(seed=7, embed_dim=model.embed_dim)
    with torch.inference_mode():
        want_emb = model.embed(frames)
        embedding = backend.encode(frames)
        assert embedding.shape == (1, model.embed_dim), embedding.shape
        scale = want_emb.abs().max().item()
        assert (embedding - want_emb).abs().max().item() <= 1e-4 * scale + 1e-5
        for mask in (None, padded):
            want_logits, want_attention = model.head(window, mask)
            logits, attention = backend.head(window, mask)
            assert logits.shape == (1, 4) and logits.dtype == torch.float32
            assert attention.shape == want_attention.shape, (attention.shape, want_attention.shape)
            diff = (logits - want_logits).abs().max().item()
            assert diff <= 1e-4, f"{name}: max logit difference {diff}"
            assert (attention - want_attention).abs().max().item() <= 1e-5


def test_eager_reports_channels_last_and_leaves_the_model_alone(model, backends):
    backend = backends("eager")
    assert backend.info.details == {"channels_last": True}
    conv = model.encoder.body.conv1.weight
    assert conv.dtype == torch.float32 and conv.is_contiguous()
    assert not model.training


@pytest.mark.slow
def test_inductor_reports_its_compile_time(backends):
    details = backends("inductor").info.details
    assert details["mode"] == "default" and details["cuda_graphs"] is False
    assert details["compile_encoder_s"] > 0 and details["compile_head_s"] > 0


@needs_ort
def test_onnxruntime_reuses_its_export(model, cache_dir, backends):
    first = backends("onnxruntime")
    again = create_backend(
        "onnxruntime", model, image_size=SIZE, window=WINDOW, cache_dir=cache_dir
    )
    assert again.info.details["onnx_dir"] == first.info.details["onnx_dir"]
    assert again.info.details["cache_hit"] is True
    assert again.info.details["providers"] == ["CPUExecutionProvider"]


@pytest.mark.slow
def test_auto_on_cpu_times_the_verified_backends_and_says_why(backends):
    backend = backends("auto")
    assert backend.name in CPU_CANDIDATES
    reason = backend.info.reason
    assert reason.startswith(f"auto picked {backend.name}: fastest verified backend on cpu")
    timed = backend.info.details["auto_ms"]
    assert "eager" in timed and "inductor" in timed and backend.name in timed
    assert ("onnxruntime" in timed) == HAS_ORT
    assert min(timed, key=timed.get) == backend.name
    assert "tensorrt: needs CUDA" in reason
    assert backend.info.parity is not None and backend.info.parity.ok


def test_parity_failure_is_loud(model, cache_dir):
    """A backend computing a different model (e.g. a stale engine) is refused."""
    other = small_model(seed=1)
    spec = make_spec(
        "eager",
        model,
        device="cpu",
        precision="fp32",
        image_size=SIZE,
        window=WINDOW,
        cache_dir=cache_dir,
        inductor_mode=None,
    )
    reference = reference_outputs(model, SIZE, WINDOW)
    with pytest.raises(ParityError, match="FAILED the parity check against eager fp32") as err:
        load_verified("eager", other, spec, reference, TOLERANCES["fp32"])
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_auto_falls_through_candidates_that_fail_parity(model, cache_dir):
    with pytest.raises(LuvnetError, match=r"auto: no backend loaded \(tensorrt: needs CUDA") as err:
        create_backend(
            "auto",
            model,
            image_size=SIZE,
            cache_dir=cache_dir,
            tolerance=Tolerance(logits=-1.0, scores=-1.0),
        )
    text = str(err.value)
    assert "eager: backend eager (cpu fp32) FAILED" in text
    assert "inductor: backend inductor (cpu fp32) FAILED" in text
    assert "\n" not in text


def test_tolerance_override_applies(model, cache_dir):
    with pytest.raises(LuvnetError, match="FAILED"):
        create_backend(
            "eager",
            model,
            image_size=SIZE,
            window=WINDOW,
            cache_dir=cache_dir,
            tolerance=Tolerance(logits=-1.0, scores=-1.0),
        )


def test_a_training_mode_model_is_copied_not_switched(cache_dir):
    training = small_model().train()
    backend = create_backend("eager", training, image_size=SIZE, cache_dir=cache_dir)
    assert training.training, "create_backend switched the caller's model to eval"
    # Dropout would make the check fail if the backend ran in training mode.
    assert backend.info.parity.ok, backend.info.parity


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "tensorrtt"}, "backend: expected one of auto, eager, inductor, tensorrt"),
        ({"name": "eager", "precision": "fp16"}, "precision fp16 needs a CUDA device"),
        ({"name": "eager", "precision": "int8"}, "precision: expected one of fp32, fp16"),
        ({"name": "eager", "device": "tpu"}, "device: expected auto, cpu, cuda or cuda:N"),
        ({"name": "inductor", "inductor_mode": "reduce-overhead"}, "needs a CUDA device"),
        ({"name": "inductor", "inductor_mode": "fast"}, "inductor mode: expected one of"),
    ],
)
def test_bad_requests_are_one_line_errors(model, cache_dir, kwargs, message):
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(LuvnetError, match=message) as err:
        create_backend(name, model, image_size=SIZE, cache_dir=cache_dir, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_requested_without_cuda(model, cache_dir):
    with pytest.raises(LuvnetError, match="no CUDA GPU is visible on this machine"):
        create_backend("eager", model, device="cuda", cache_dir=cache_dir)


@pytest.mark.skipif(HAS_TRT, reason="torch-tensorrt is installed here")
def test_tensorrt_not_installed_gives_the_install_hint(model, cache_dir):
    major, minor = torch.__version__.split(".")[:2]
    with pytest.raises(LuvnetError) as err:
        create_backend("tensorrt", model, image_size=SIZE, cache_dir=cache_dir)
    text = str(err.value)
    assert f"TensorRT backend needs torch-tensorrt matching torch {major}.{minor}" in text
    assert "pip install 'luvnet[tensorrt]'" in text and "\n" not in text


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is not None, reason="onnxruntime is installed here"
)
def test_onnxruntime_not_installed_gives_the_install_hint(model, cache_dir):
    with pytest.raises(LuvnetError, match=r"pip install 'luvnet\[onnx\]'"):
        create_backend("onnxruntime", model, image_size=SIZE, cache_dir=cache_dir)


def test_wrong_shapes_name_the_expected_shape(backends):
    backend = backends("eager")
    with pytest.raises(ValueError, match=r"expected frames \(1, 3, 64, 64\), got \(1, 3, 32, 32\)"):
        backend.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected window \(1, 30, 512\), got \(1, 29, 512\)"):
        backend.head(torch.zeros(1, 29, 512))


def test_defaults_come_from_the_model_config(cache_dir):
    config = ModelConfig(
        backbone="resnet18",
        fusion_hidden=64,
        kernel_size=5,
        clip_length=12,
        clip_step=6,
        preprocess=PreprocessConfig(image_size=48),
    )
    backend = create_backend("eager", build_model(config).eval(), cache_dir=cache_dir)
    assert (backend.info.image_size, backend.info.window) == (48, 12)
    assert backend.info.parity.ok


def test_fingerprint_changes_with_any_weight(model):
    other = small_model()
    assert model_fingerprint(other) == model_fingerprint(model)
    with torch.no_grad():
        other.clip_head.classifier[-1].bias[0] += 1e-6
    assert model_fingerprint(other) != model_fingerprint(model)


# torch-tensorrt precision options per version (docs/model.md, "Known pitfalls"), checked
# without TensorRT.
@pytest.mark.parametrize(
    "version, accepted, expected",
    [
        ((2, 9), {"enabled_precisions", "use_explicit_typing"}, {"enabled_precisions"}),
        ((2, 11), {"enabled_precisions", "use_explicit_typing"}, {"use_explicit_typing"}),
        ((2, 13), {"enable_autocast"}, set()),
    ],
)
def test_tensorrt_fp16_options_follow_the_version(version, accepted, expected):
    options = precision_options(version, accepted, "fp16")
    assert set(options) == expected
    if "enabled_precisions" in options:
        assert options["enabled_precisions"] == {torch.half}
    assert precision_options(version, accepted, "fp32") == {}


def test_tensorrt_options_not_declared_are_dropped(tmp_path):
    accepted = {"device", "min_block_size", "enabled_precisions"}
    options = compile_options(
        (2, 9), accepted, precision="fp16", device=torch.device("cpu"), timing_cache=tmp_path
    )
    assert options["min_block_size"] == 1
    assert "timing_cache_path" not in options
    assert set(options) <= accepted


def test_every_name_is_listed():
    assert BACKEND_NAMES == ("auto", "eager", "inductor", "tensorrt", "onnxruntime")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(
    "name, precision, tolerance",
    [
        ("eager", "fp32", 1e-3),
        ("eager", "fp16", 5e-2),
        pytest.param("inductor", "fp16", 5e-2, marks=pytest.mark.slow),
        pytest.param("onnxruntime", "fp32", 1e-3, marks=needs_ort),
    ],
)
def test_cuda_backend_matches_eager(model, cache_dir, name, precision, tolerance):
    if name == "onnxruntime":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            pytest.skip("onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    backend = create_backend(
        name,
        model,
        device="cuda",
        precision=precision,
        image_size=SIZE,
        window=WINDOW,
        cache_dir=cache_dir,
    )
    assert backend.info.device.startswith("cuda")
    assert backend.info.parity.logits <= tolerance, backend.info.parity
    if name == "inductor":
        assert backend.info.details["cuda_graphs"] is True
    _, window, padded = random_inputs(seed=7, embed_dim=model.embed_dim)
    window, padded = window.cuda(), padded.cuda()
    with torch.inference_mode():
        reference = copy.deepcopy(model).cuda().head(window, padded)[0]
        logits, _ = backend.head(window, padded)
    assert (logits - reference).abs().max().item() <= tolerance


@needs_trt
@pytest.mark.gpu
@pytest.mark.slow
def test_tensorrt_fp16_builds_caches_and_reloads(model, tmp_path):
    first = create_backend(
        "tensorrt", model, device="cuda", precision="fp16", image_size=SIZE, cache_dir=tmp_path
    )
    assert first.info.parity.ok and first.info.details["encoder_cache_hit"] is False
    again = create_backend(
        "tensorrt", model, device="cuda", precision="fp16", image_size=SIZE, cache_dir=tmp_path
    )
    assert again.info.details["encoder_cache_hit"] is True
    assert again.info.details["head_cache_hit"] is True
    assert again.info.parity.ok
