"""The generator's batched decoder keeps scratch buffers between calls; results stay those of
each call alone."""

import torch

from engine.sam.modeling import Sam
from engine.sam.modeling.prompt_batch import PromptBatchDecoder


def _prompts(sam: Sam, batch: int, seed: int) -> torch.Tensor:
    """Sparse embeddings B x 3 x C of two random points each (plus the padding point)."""
    generator = torch.Generator().manual_seed(seed)
    coords = torch.rand((batch, 2, 2), generator=generator) * sam.img_size
    labels = torch.randint(0, 2, (batch, 2), generator=generator, dtype=torch.int)
    with torch.no_grad():
        sparse, _ = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    return sparse


def test_reusing_a_decoder_for_other_batches_leaves_earlier_results_unchanged(
    golden_sam: Sam,
) -> None:
    # A later, smaller batch reuses (and overwrites) the buffers: the earlier batch's tokens
    # must still give the same masks, and the same batch again the same results.
    generator = torch.Generator().manual_seed(5)
    shape = (
        1,
        golden_sam.prompt_encoder.embed_dim,
        *golden_sam.prompt_encoder.image_embedding_size,
    )
    embedding = torch.randn(shape, generator=generator)
    with torch.no_grad():
        _, no_mask = golden_sam.prompt_encoder(points=None, boxes=None, masks=None)
    pe = golden_sam.prompt_encoder.get_dense_pe()
    decoder = PromptBatchDecoder(golden_sam.mask_decoder, embedding + no_mask, pe)
    sparse, other = _prompts(golden_sam, 9, seed=5), _prompts(golden_sam, 4, seed=6)

    first = decoder.tokens(sparse)
    before = decoder.masks(first, torch.arange(9), slice(0, None))
    decoder.masks(decoder.tokens(other), torch.arange(4), slice(0, None))
    after = decoder.masks(first, torch.arange(9), slice(0, None))
    again = decoder.tokens(sparse)

    assert before.shape == (9, 4, *before.shape[-2:])
    assert torch.equal(after, before)
    assert torch.equal(again.iou, first.iou)
    assert torch.equal(decoder.masks(again, torch.arange(9), slice(0, None)), before)
