"""`PromptBatchDecoder` (many prompts, one image) gives what `MaskDecoder.forward` gives."""

from unittest import mock

import numpy as np
import pytest
import torch
from torch import Tensor

from engine.sam.amg import SamAutomaticMaskGenerator
from engine.sam.build import build_mask_decoder
from engine.sam.config import VIT_B
from engine.sam.modeling import Sam, prompt_batch
from engine.sam.modeling.mask_decoder import MaskDecoder
from engine.sam.modeling.prompt_batch import DecodedTokens, PromptBatchDecoder

LOGIT_TOL = 1e-4
IOU_TOL = 1e-5


def _inputs(sam: Sam, batch: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A random image embedding 1 x C x 64 x 64 and point prompts (sparse, dense)."""
    generator = torch.Generator().manual_seed(seed)
    channels = sam.prompt_encoder.embed_dim
    embedding = torch.randn(
        (1, channels, *sam.prompt_encoder.image_embedding_size), generator=generator
    )
    coords = torch.rand((batch, 2, 2), generator=generator) * sam.img_size
    labels = torch.randint(0, 2, (batch, 2), generator=generator, dtype=torch.int)
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    return embedding, sparse, dense


@pytest.mark.parametrize("batch", [1, 5, 17])
@pytest.mark.parametrize("model", ["golden_sam", "tiny_sam"])
def test_tokens_and_masks_equal_the_reference_decoder(
    model: str, batch: int, request: pytest.FixtureRequest
) -> None:
    sam: Sam = request.getfixturevalue(model)
    embedding, sparse, dense = _inputs(sam, batch, seed=batch)
    pe = sam.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        reference_masks, reference_iou = sam.mask_decoder.predict_masks(
            embedding, pe, sparse, dense
        )
    decoder = PromptBatchDecoder(sam.mask_decoder, embedding + dense[:1], pe)
    decoded = decoder.tokens(sparse)
    masks = decoder.masks(decoded, torch.arange(batch), slice(0, None))

    assert decoded.iou.shape == reference_iou.shape
    assert torch.allclose(decoded.iou, reference_iou, atol=IOU_TOL, rtol=0)
    scale = float(reference_masks.abs().max())
    assert masks.shape == reference_masks.shape
    assert float((masks - reference_masks).abs().max()) <= LOGIT_TOL * max(1.0, scale)


def test_masks_for_chosen_rows_and_tokens_are_those_rows_and_tokens(golden_sam: Sam) -> None:
    embedding, sparse, dense = _inputs(golden_sam, 9, seed=3)
    pe = golden_sam.prompt_encoder.get_dense_pe()
    decoder = PromptBatchDecoder(golden_sam.mask_decoder, embedding + dense[:1], pe)
    decoded = decoder.tokens(sparse)
    every = decoder.masks(decoded, torch.arange(9), slice(0, None))
    rows = torch.tensor([7, 2, 4])
    chosen = decoder.masks(decoded, rows, slice(1, None))
    # Equal up to rounding: a GEMM over 3 rows may block its sums differently from one over 9.
    torch.testing.assert_close(chosen, every[rows][:, 1:], atol=1e-5, rtol=0)
    empty = decoder.masks(decoded, torch.zeros(0, dtype=torch.long), slice(1, None))
    assert empty.shape == (0, 3, *every.shape[-2:])


def test_a_decoder_without_the_official_layout_is_refused(golden_sam: Sam) -> None:
    embedding, _, _ = _inputs(golden_sam, 2, seed=1)
    pe = golden_sam.prompt_encoder.get_dense_pe()
    with pytest.raises(ValueError, match="one image"):
        PromptBatchDecoder(golden_sam.mask_decoder, torch.cat([embedding, embedding]), pe)


def test_the_generator_upscales_only_prompts_with_a_candidate_over_the_iou_threshold(
    golden_sam: Sam,
) -> None:
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    calls: list[Tensor] = []
    original = PromptBatchDecoder.masks

    def spy(
        self: PromptBatchDecoder, decoded: DecodedTokens, rows: Tensor, tokens: slice
    ) -> Tensor:
        if threshold > 0.0:
            kept = (decoded.iou[:, 1:] > threshold).any(dim=1)
        else:
            kept = torch.ones(decoded.iou.shape[0], dtype=torch.bool)
        assert torch.equal(rows, torch.nonzero(kept).flatten())
        calls.append(rows)
        return original(self, decoded, rows, tokens)

    for threshold in (0.3, 0.0):
        calls.clear()
        generator = SamAutomaticMaskGenerator(
            golden_sam, points_per_side=4, pred_iou_thresh=threshold
        )
        with mock.patch.object(PromptBatchDecoder, "masks", spy):
            generator.generate(image)
        assert calls
        if threshold == 0.0:  # no IoU filter: every prompt is upscaled
            assert sum(len(rows) for rows in calls) == 16


def _vit_b_decoder() -> MaskDecoder:
    """A randomly initialised decoder of the official size (every SAM: 256 channels, 8 heads)."""
    torch.manual_seed(11)
    decoder = build_mask_decoder(VIT_B)
    return decoder.eval()


def test_an_official_size_decoder_in_several_chunks_equals_the_reference() -> None:
    decoder = _vit_b_decoder()
    channels = decoder.transformer_dim
    generator = torch.Generator().manual_seed(2)
    batch = 9
    embedding = torch.randn((1, channels, 64, 64), generator=generator)
    pe = torch.randn((1, channels, 64, 64), generator=generator)
    sparse = torch.randn((batch, 2, channels), generator=generator)
    dense = torch.randn((1, channels, 64, 64), generator=generator).expand(batch, -1, -1, -1)
    with torch.no_grad():
        reference_masks, reference_iou = decoder.predict_masks(embedding, pe, sparse, dense)
    batched = PromptBatchDecoder(decoder, embedding + dense[:1], pe)
    with mock.patch.object(prompt_batch, "CHUNK_BYTES", 4 * 64 * 64 * channels * 4):
        decoded = batched.tokens(sparse)
    assert len(decoded.keys) > 1  # the 9 prompts went through in chunks of 4
    rows = torch.tensor([8, 0, 1, 6])  # across chunks, out of order, and two consecutive
    masks = batched.masks(decoded, rows, slice(0, None))

    torch.testing.assert_close(decoded.iou, reference_iou, atol=IOU_TOL, rtol=0)
    scale = float(reference_masks.abs().max())
    assert masks.shape == (4, *reference_masks.shape[1:])
    assert float((masks - reference_masks[rows]).abs().max()) <= LOGIT_TOL * max(1.0, scale)
