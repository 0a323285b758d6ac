"""The mask decoder projects a shared image embedding once for a batch of prompts.

Without a mask prompt every prompt of a batch sees the same image + no-mask embedding, so the
first two-way block computes its image-side projections once (`Attention.forward_shared_kv`,
`Attention.forward_shared_q`). These tests pin that this branch is taken only then, and that it
gives what repeating the image per prompt gives.
"""

from collections.abc import Iterator
from unittest import mock

import pytest
import torch
from torch import Tensor

from engine.sam.modeling import Sam
from engine.sam.modeling.token_attention import Attention
from engine.sam.predictor import SamPredictor

TOLERANCE = 1e-5


@pytest.fixture
def shared_calls() -> Iterator[mock.MagicMock]:
    """Counts `forward_shared_kv` calls while still running it."""
    original = Attention.forward_shared_kv
    with mock.patch.object(
        Attention, "forward_shared_kv", autospec=True, side_effect=original
    ) as spy:
        yield spy


def _prompts(sam: Sam, batch: int, with_masks: bool) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(batch)
    coords = torch.rand((batch, 2, 2), generator=generator) * sam.img_size
    labels = torch.randint(0, 2, (batch, 2), generator=generator, dtype=torch.int)
    masks = None
    if with_masks:
        size = sam.prompt_encoder.mask_input_size
        masks = torch.randn((batch, 1, *size), generator=generator)
    with torch.no_grad():
        return sam.prompt_encoder(points=(coords, labels), boxes=None, masks=masks)


def _decode(sam: Sam, embedding: Tensor, sparse: Tensor, dense: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )


def _embedding(sam: Sam) -> Tensor:
    channels = sam.prompt_encoder.embed_dim
    grid = sam.prompt_encoder.image_embedding_size
    return torch.randn((1, channels, *grid), generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
def test_shared_image_path_matches_the_repeated_image_path(
    golden_sam: Sam, shared_calls: mock.MagicMock, batch: int
) -> None:
    embedding = _embedding(golden_sam)
    sparse, dense = _prompts(golden_sam, batch, with_masks=False)
    assert dense.stride(0) == 0  # the no-mask embedding is expanded, not copied

    fast_masks, fast_iou = _decode(golden_sam, embedding, sparse, dense)
    assert shared_calls.call_count == 1
    # A materialised copy of the same dense rows takes the general, repeated-image path.
    masks, iou = _decode(golden_sam, embedding, sparse, dense.contiguous())
    assert shared_calls.call_count == 1

    assert fast_masks.shape == masks.shape == (batch, 3, 256, 256)
    torch.testing.assert_close(fast_masks, masks, rtol=0.0, atol=TOLERANCE)
    torch.testing.assert_close(fast_iou, iou, rtol=0.0, atol=TOLERANCE)


@pytest.mark.parametrize("batch", [2, 5])
def test_shared_image_path_matches_decoding_each_prompt_alone(
    golden_sam: Sam, shared_calls: mock.MagicMock, batch: int
) -> None:
    embedding = _embedding(golden_sam)
    sparse, dense = _prompts(golden_sam, batch, with_masks=False)

    masks, iou = _decode(golden_sam, embedding, sparse, dense)
    alone = [
        _decode(golden_sam, embedding, sparse[i : i + 1], dense[i : i + 1]) for i in range(batch)
    ]

    assert shared_calls.call_count == 1  # batches of one never take the shared path
    torch.testing.assert_close(masks, torch.cat([m for m, _ in alone]), rtol=0.0, atol=TOLERANCE)
    torch.testing.assert_close(iou, torch.cat([s for _, s in alone]), rtol=0.0, atol=TOLERANCE)


@pytest.mark.parametrize("batch", [1, 4])
def test_mask_prompts_take_the_general_path_and_match_decoding_alone(
    golden_sam: Sam, shared_calls: mock.MagicMock, batch: int
) -> None:
    embedding = _embedding(golden_sam)
    sparse, dense = _prompts(golden_sam, batch, with_masks=True)

    masks, iou = _decode(golden_sam, embedding, sparse, dense)
    alone = [
        _decode(golden_sam, embedding, sparse[i : i + 1], dense[i : i + 1]) for i in range(batch)
    ]

    assert shared_calls.call_count == 0
    torch.testing.assert_close(masks, torch.cat([m for m, _ in alone]), rtol=0.0, atol=TOLERANCE)
    torch.testing.assert_close(iou, torch.cat([s for _, s in alone]), rtol=0.0, atol=TOLERANCE)


def test_one_embedding_per_prompt_takes_the_general_path(
    golden_sam: Sam, shared_calls: mock.MagicMock
) -> None:
    embedding = _embedding(golden_sam)
    sparse, dense = _prompts(golden_sam, 3, with_masks=False)

    masks, iou = _decode(golden_sam, embedding.expand(3, -1, -1, -1), sparse, dense)
    fast_masks, fast_iou = _decode(golden_sam, embedding, sparse, dense)

    assert shared_calls.call_count == 1  # only the single-embedding call
    torch.testing.assert_close(fast_masks, masks, rtol=0.0, atol=TOLERANCE)
    torch.testing.assert_close(fast_iou, iou, rtol=0.0, atol=TOLERANCE)


def test_predict_torch_uses_the_shared_path_only_without_mask_input(
    embedded_predictor: SamPredictor, shared_calls: mock.MagicMock
) -> None:
    coords = torch.tensor([[[40.0, 60.0]], [[500.0, 300.0]], [[900.0, 100.0]]])
    labels = torch.ones((3, 1), dtype=torch.int)
    size = embedded_predictor.model.prompt_encoder.mask_input_size
    mask_input = torch.zeros((3, 1, *size))

    masks, iou, low_res = embedded_predictor.predict_torch(coords, labels)
    assert shared_calls.call_count == 1
    _, _, with_mask = embedded_predictor.predict_torch(coords, labels, mask_input=mask_input)
    assert shared_calls.call_count == 1

    assert masks.shape == (3, 3, 300, 200)
    assert iou.shape == (3, 3)
    assert low_res.shape == with_mask.shape == (3, 3, 256, 256)
