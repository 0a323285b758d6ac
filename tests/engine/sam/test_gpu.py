"""Device selection (CPU-testable) and the CUDA path (bf16 + SDPA, batching, torch.compile).

Tests marked `gpu` need a CUDA device and are skipped without one; the rest check the code
paths that do not need CUDA, including that importing engine.sam never touches it.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.sam.device import compile_image_encoder, select_device
from engine.sam.embedding import embed_images
from engine.sam.modeling import Sam
from engine.sam.modeling.vit_block import Block
from engine.sam.predictor import SamPredictor
from tests.engine.sam.test_parity import EMBEDDING_REL_TOL

REPO = Path(__file__).resolve().parents[3]
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine"
)


def test_importing_engine_sam_never_touches_cuda() -> None:
    probe = textwrap.dedent(
        """
        import torch

        def refuse(*args, **kwargs):
            raise SystemExit("CUDA was queried at import time")

        for name in ("is_available", "device_count", "init", "current_device"):
            setattr(torch.cuda, name, refuse)
        import engine.sam.build, engine.sam.device, engine.sam.embedding, engine.sam.predictor
        from engine.sam import SamPredictor, embed_images, select_device
        print("clean")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_select_device_resolves_cpu_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")


def test_select_device_refuses_cuda_without_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda:1")


def test_select_device_refuses_a_missing_cuda_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        select_device("cuda:3")


@pytest.mark.parametrize("choice", ["tpu", "mps", "gpu0", ""])
def test_select_device_refuses_unknown_devices(choice: str) -> None:
    with pytest.raises(ValueError, match="device"):
        select_device(choice)


def test_compile_wraps_the_encoder_and_keeps_the_weights(tiny_sam: Sam) -> None:
    import copy

    sam = copy.deepcopy(tiny_sam)
    before = {key: value.clone() for key, value in sam.state_dict().items()}
    original = sam.image_encoder.forward
    compile_image_encoder(sam)  # compilation itself happens on the first call (GPU test)
    assert sam.image_encoder.forward is not original
    after = sam.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)


@pytest.fixture(scope="module")
def cuda_sam(golden_sam: Sam) -> Sam:
    import copy

    return copy.deepcopy(golden_sam).to("cuda")


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp32_sdpa_keeps_embedding_parity(
    cuda_sam: Sam, goldens: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    block = cuda_sam.image_encoder.blocks[0]
    assert isinstance(block, Block)
    assert block.attn.sdpa_active(cuda_sam.device)
    predictor = SamPredictor(cuda_sam)
    for index in range(int(goldens["n_images"])):
        predictor.set_image(goldens[f"img{index}/image"])
        ours = predictor.get_image_embedding().cpu().numpy()
        official = goldens[f"img{index}/embedding"]
        assert float(np.abs(ours - official).max()) <= EMBEDDING_REL_TOL * np.abs(official).max()


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_batch_matches_one_by_one_and_fp32(
    cuda_sam: Sam, goldens: dict[str, np.ndarray]
) -> None:
    images = [goldens[f"img{index}/image"] for index in range(int(goldens["n_images"]))]
    batched = embed_images(cuda_sam, images * 4, precision="bf16", batch_size=8)
    single = [embed_images(cuda_sam, [image], precision="bf16")[0] for image in images]
    for index, item in enumerate(batched):
        assert item.embedding.device.type == "cpu"
        assert item.embedding.dtype == torch.float32
        want = single[index % len(images)].embedding
        assert float((item.embedding - want).abs().max()) <= 2e-2 * float(want.abs().max())
        official = goldens[f"img{index % len(images)}/embedding"]
        relative = np.abs(item.embedding.numpy() - official).max() / np.abs(official).max()
        assert relative < 5e-2


@pytest.mark.gpu
@needs_cuda
def test_cuda_compiled_encoder_matches_eager(cuda_sam: Sam) -> None:
    import copy

    compiled = copy.deepcopy(cuda_sam)
    compile_image_encoder(compiled)
    assert all(  # the folded-bias SDPA kernel runs under compile
        m.fold_bias for m in compiled.image_encoder.modules() if hasattr(m, "fold_bias")
    )
    image = torch.rand(2, 3, 1024, 1024, device="cuda") * 255
    with torch.no_grad():
        eager = cuda_sam.image_encoder(cuda_sam.preprocess(image))
        fast = compiled.image_encoder(compiled.preprocess(image))
    scale = float(eager.abs().max())
    assert float((fast - eager).abs().max()) <= 1e-3 * scale


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("case_name", ["grid12_low", "crops"])
def test_cuda_generator_matches_the_official_records(
    case_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The automatic generator on the GPU (batched decoder, upsampling, filters on the device)
    keeps the official CPU records of the golden cases."""
    import json

    from engine.sam.amg import SamAutomaticMaskGenerator
    from engine.sam.checkpoint import load_sam
    from tests.engine.sam.conftest import GOLDENS
    from tests.engine.sam.test_amg_parity import MATCHED_FRACTION, match

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    sam = load_sam(GOLDENS / "amg_tiny_sam.pth", arch="vit_tiny").to("cuda")
    case = next(
        c
        for c in json.loads((GOLDENS / "amg_goldens.json").read_text())["cases"]
        if c["name"] == case_name
    )
    with np.load(GOLDENS / "amg_images.npz") as data:
        image = data[f"arr_{case['image']}"]
    generator = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **case["params"])
    ours = generator.generate(image)
    official = case["records"]
    matched = [m for m in match(ours, official) if m is not None]
    assert len(official) >= 20
    assert len(matched) >= MATCHED_FRACTION * len(official)
