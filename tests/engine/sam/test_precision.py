"""Precision (fp32 / bf16) and attention-kernel options of the encoder, against the goldens.

Bars: fp32 with either attention kernel keeps the parity bars of test_parity.py; bf16 masks
differ from fp32 in at most 0.5 % of pixels (measured 0.15-0.18 % on these cases; the issue's
goal is 1 %) and IoU predictions by at most 0.005 (measured <= 0.002).
"""

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from engine.sam.device import precision_context
from engine.sam.modeling import Sam, vit_attention
from engine.sam.modeling.vit_attention import VitAttention
from engine.sam.predictor import SamPredictor
from tests.engine.sam.test_parity import EMBEDDING_REL_TOL, case_kwargs, golden_masks

BF16_MASK_PIXEL_FRACTION = 5e-3
BF16_IOU_TOL = 5e-3


@pytest.fixture
def sdpa_encoder(golden_sam: Sam) -> Iterator[Sam]:
    """The golden model with the fused kernel forced on, restored to the default after."""
    golden_sam.image_encoder.set_sdpa(True)
    try:
        yield golden_sam
    finally:
        golden_sam.image_encoder.set_sdpa(None)


def relative_embedding_diff(predictor: SamPredictor, official: np.ndarray) -> float:
    ours = predictor.get_image_embedding().numpy()
    return float(np.abs(ours - official).max()) / float(np.abs(official).max())


def test_default_kernel_is_folded_sdpa_on_cpu_and_masked_sdpa_on_cuda() -> None:
    attention = VitAttention(32, num_heads=2, input_size=(14, 14))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert attention.use_sdpa is None
    assert attention.sdpa_active(cpu)
    assert attention.folded_active(cpu)
    assert attention.sdpa_active(cuda)
    assert not attention.folded_active(cuda)
    attention.fold_bias = True  # what compile_image_encoder sets
    assert attention.folded_active(cuda)
    attention.use_sdpa = False
    assert not attention.sdpa_active(cpu)
    assert not attention.folded_active(cpu)


def test_explicit_kernel_reproduces_the_official_embedding(
    golden_sam: Sam, goldens: dict[str, np.ndarray]
) -> None:
    golden_sam.image_encoder.set_sdpa(False)
    try:
        predictor = SamPredictor(golden_sam)
        predictor.set_image(goldens["img0/image"])
        # 1e-5: 10x inside the issue's 1e-4; the goldens' CPU and this one sum in other orders
        # (1.1e-6 measured on an AMD EPYC against goldens made elsewhere).
        assert relative_embedding_diff(predictor, goldens["img0/embedding"]) <= 1e-5
    finally:
        golden_sam.image_encoder.set_sdpa(None)


def test_sdpa_kernel_keeps_embedding_parity(
    sdpa_encoder: Sam, goldens: dict[str, np.ndarray]
) -> None:
    predictor = SamPredictor(sdpa_encoder)
    for index in range(int(goldens["n_images"])):
        predictor.set_image(goldens[f"img{index}/image"])
        official = goldens[f"img{index}/embedding"]
        assert relative_embedding_diff(predictor, official) <= EMBEDDING_REL_TOL


def test_masked_sdpa_kernel_keeps_embedding_parity(
    sdpa_encoder: Sam, goldens: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA eager kernel (bias as an SDPA mask), run here on the CPU."""
    monkeypatch.setattr(VitAttention, "folded_active", lambda self, device: False)
    predictor = SamPredictor(sdpa_encoder)
    for index in range(int(goldens["n_images"])):
        predictor.set_image(goldens[f"img{index}/image"])
        official = goldens[f"img{index}/embedding"]
        assert relative_embedding_diff(predictor, official) <= EMBEDDING_REL_TOL


def test_attention_split_into_head_groups_gives_the_same_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    attention = VitAttention(32, num_heads=4, input_size=(14, 14))
    with torch.no_grad():
        attention.rel_pos_h.normal_(0, 0.5)
        attention.rel_pos_w.normal_(0, 0.5)
        x = torch.randn(2, 14, 14, 32)
        attention.use_sdpa = False
        whole = attention(x)
        monkeypatch.setattr(vit_attention, "ATTENTION_BUDGET", 3 * 196 * 196)  # 3 of 8 heads
        grouped = attention(x)
        attention.use_sdpa = True
        grouped_sdpa = attention(x)
    assert torch.equal(grouped, whole)
    assert float((grouped_sdpa - whole).abs().max()) < 1e-5


def test_set_sdpa_rejects_anything_but_true_false_none(golden_sam: Sam) -> None:
    with pytest.raises(ValueError, match="set_sdpa"):
        golden_sam.image_encoder.set_sdpa("yes")  # type: ignore[arg-type]


def test_unknown_precision_is_refused(golden_sam: Sam) -> None:
    with pytest.raises(ValueError, match="fp16"):
        SamPredictor(golden_sam, precision="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        precision_context(torch.device("cpu"), "int8")


def test_bf16_context_runs_matmuls_in_bfloat16_on_cpu() -> None:
    layer = torch.nn.Linear(4, 4)
    with precision_context(torch.device("cpu"), "bf16"):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with precision_context(torch.device("cpu"), "fp32"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


@pytest.mark.parametrize("sdpa", [False, None], ids=["explicit", "folded-sdpa"])
def test_bf16_masks_stay_close_to_fp32(
    golden_sam: Sam, goldens: dict[str, np.ndarray], sdpa: bool | None
) -> None:
    golden_sam.image_encoder.set_sdpa(sdpa)
    try:
        fp32, bf16 = SamPredictor(golden_sam), SamPredictor(golden_sam, precision="bf16")
        worst_pixels = worst_iou = 0.0
        for index in range(int(goldens["n_images"])):
            image = goldens[f"img{index}/image"]
            fp32.set_image(image)
            bf16.set_image(image)
            embedding = bf16.get_image_embedding()
            assert embedding.dtype == torch.float32
            diff = relative_embedding_diff(bf16, goldens[f"img{index}/embedding"])
            assert 1e-4 < diff < 5e-2  # really bf16, and still the same function
            for case in range(int(goldens["n_cases"])):
                if int(goldens[f"case{case}/image_index"]) != index:
                    continue
                if int(goldens[f"case{case}/mask_from"]) >= 0:
                    continue  # feedback cases chain outputs; covered by the fp32 parity tests
                kwargs = case_kwargs(goldens, case)
                masks, iou, low_res = bf16.predict(**kwargs)
                masks32, iou32, _ = fp32.predict(**kwargs)
                assert iou.dtype == low_res.dtype == np.float32
                assert masks.dtype == np.bool_
                assert float((masks32 != golden_masks(goldens, case)).mean()) <= 1e-3
                worst_pixels = max(worst_pixels, float((masks != masks32).mean()))
                worst_iou = max(worst_iou, float(np.abs(iou - iou32).max()))
    finally:
        golden_sam.image_encoder.set_sdpa(None)
    assert 0.0 < worst_pixels <= BF16_MASK_PIXEL_FRACTION
    assert worst_iou <= BF16_IOU_TOL
