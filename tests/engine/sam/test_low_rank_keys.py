"""Low-rank image keys (low_rank_keys.py) equal the dense tensors they stand for."""

from collections.abc import Iterator
from unittest import mock

import pytest
import torch
from torch import Tensor, nn

from engine.sam.build import build_mask_decoder
from engine.sam.config import VIT_B
from engine.sam.modeling import Sam, prompt_batch
from engine.sam.modeling.low_rank_keys import (
    LowRankKeys,
    MixGroup,
    SharedImage,
    attend,
    image_scores,
    layer_norm,
    project_into,
)
from engine.sam.modeling.mask_decoder import MaskDecoder
from engine.sam.modeling.prompt_batch import PromptBatchDecoder
from engine.sam.modeling.two_way_block import TwoWayAttentionBlock
from engine.sam.modeling.two_way_transformer import TwoWayTransformer

TOL = 1e-5


@pytest.fixture(autouse=True)
def _no_grad() -> Iterator[None]:
    with torch.no_grad():
        yield


def _official_size_decoder() -> MaskDecoder:
    """The official decoder's shape (256 channels, 8 heads), random weights and LayerNorms."""
    torch.manual_seed(3)
    decoder = build_mask_decoder(VIT_B).eval()
    _shake_layer_norms(decoder)
    return decoder


def _transformer(decoder: MaskDecoder) -> TwoWayTransformer:
    transformer = decoder.transformer
    assert isinstance(transformer, TwoWayTransformer)
    return transformer


def _blocks(decoder: MaskDecoder) -> list[TwoWayAttentionBlock]:
    blocks = [b for b in _transformer(decoder).layers if isinstance(b, TwoWayAttentionBlock)]
    assert blocks
    return blocks


def _shake_layer_norms(module: nn.Module) -> None:
    """LayerNorm weights and biases away from 1 and 0, so that both enter every test."""
    generator = torch.Generator().manual_seed(17)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.LayerNorm):
                layer.weight.copy_(1 + 0.5 * torch.randn(layer.weight.shape, generator=generator))
                layer.bias.copy_(0.5 * torch.randn(layer.bias.shape, generator=generator))


def _update(
    block: TwoWayAttentionBlock, batch: int, tokens: int, pixels: int, seed: int
) -> tuple[Tensor, MixGroup]:
    """Random image->token probabilities B x H*T x HW and the block's value rows."""
    attention = block.cross_attn_image_to_token
    heads = attention.num_heads
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn((batch, heads, tokens, pixels), generator=generator)
    probs = logits.softmax(dim=2).flatten(1, 2)
    token_v = torch.randn((batch, tokens, attention.internal_dim), generator=generator)
    return probs, MixGroup.of_update(attention, token_v)


def _dense_layer_norm(norm: nn.LayerNorm, keys: Tensor, probs: Tensor, group: MixGroup) -> Tensor:
    return norm(keys + probs.transpose(1, 2) @ group.rows())


def _two_blocks(
    blocks: list[TwoWayAttentionBlock], image: Tensor, batch: int
) -> tuple[SharedImage, list[LowRankKeys], list[Tensor]]:
    """Keys after each block's LayerNorm, low-rank and dense."""
    shared = SharedImage(image)
    keys = LowRankKeys.image(shared, batch)
    dense = image.expand(batch, -1, -1)
    low_rank_steps, dense_steps = [], []
    for number, block in enumerate(blocks):
        probs, group = _update(block, batch, 7, image.shape[0], seed=number)
        keys = layer_norm(block.norm4, keys, probs, group, shared)
        dense = _dense_layer_norm(block.norm4, dense, probs, group)
        low_rank_steps.append(keys)
        dense_steps.append(dense)
    return shared, low_rank_steps, dense_steps


def _decoders(request: pytest.FixtureRequest) -> list[MaskDecoder]:
    golden: Sam = request.getfixturevalue("golden_sam")
    shaken = build_mask_decoder(VIT_B).eval()
    shaken.load_state_dict(_official_size_decoder().state_dict())
    return [golden.mask_decoder, shaken]


@pytest.mark.parametrize("batch", [1, 3])
def test_low_rank_layer_norms_equal_the_dense_ones(
    batch: int, request: pytest.FixtureRequest
) -> None:
    for decoder in _decoders(request):
        channels = decoder.transformer_dim
        image = torch.randn((64 * 64, channels), generator=torch.Generator().manual_seed(batch))
        blocks = _blocks(decoder)
        shared, low_rank, dense = _two_blocks(blocks, image, batch)
        for keys, expected in zip(low_rank, dense, strict=True):
            torch.testing.assert_close(keys.dense(shared), expected, atol=TOL, rtol=0)
        # Two columns per LayerNorm besides the probabilities: -mean/std and 1.
        heads = blocks[0].cross_attn_image_to_token.num_heads
        assert low_rank[-1].mix.shape[1] == len(blocks) * (7 * heads + 2)


def test_scores_attention_and_projection_of_low_rank_keys_equal_the_dense_ones() -> None:
    decoder = _official_size_decoder()
    channels = decoder.transformer_dim
    generator = torch.Generator().manual_seed(4)
    image = torch.randn((32 * 32, channels), generator=generator)
    pe = torch.randn((32 * 32, channels), generator=generator)
    blocks = _blocks(decoder)
    shared, low_rank, dense = _two_blocks(blocks, image, batch=2)
    keys, expected = low_rank[-1], dense[-1]

    final = _transformer(decoder).final_attn_token_to_image
    q = final.q_proj(torch.randn((2, 5, channels), generator=generator))
    pe_k = prompt_batch._pe_keys(final, pe[None])
    heads, per_head = final.num_heads, final.internal_dim // final.num_heads
    k = final.k_proj(expected + pe).view(2, -1, heads, per_head).transpose(1, 2)
    v = final.v_proj(expected).view(2, -1, heads, per_head).transpose(1, 2)
    reference = nn.functional.scaled_dot_product_attention(
        q.view(2, 5, heads, -1).transpose(1, 2), k, v
    )
    torch.testing.assert_close(
        attend(keys, shared, final, q, pe_k),
        reference.transpose(1, 2).reshape(2, 5, -1),
        atol=TOL,
        rtol=0,
    )

    i2t = blocks[0].cross_attn_image_to_token
    token_k = torch.randn((2, 7, i2t.internal_dim), generator=generator)
    scores = image_scores(keys, shared, i2t, i2t.q_proj(pe), token_k)
    q_image = i2t.q_proj(expected + pe).view(2, -1, heads, per_head)
    dense_scores = torch.einsum("bnhd,bthd->bhtn", q_image, token_k.view(2, 7, heads, per_head))
    torch.testing.assert_close(scores, dense_scores / per_head**0.5, atol=TOL, rtol=0)

    weight = torch.randn((channels, 64), generator=generator)
    bias = torch.randn(64, generator=generator)
    out = torch.empty((2, 32 * 32, 64))
    project_into(keys, shared, "test", weight, bias, out)
    torch.testing.assert_close(out, expected @ weight + bias, atol=1e-4, rtol=0)


def test_taken_rows_of_low_rank_keys_are_those_rows() -> None:
    decoder = _official_size_decoder()
    image = torch.randn((16 * 16, decoder.transformer_dim), generator=torch.Generator())
    shared, low_rank, _ = _two_blocks(_blocks(decoder), image, batch=4)
    keys = low_rank[-1]
    every = keys.dense(shared)
    taken = LowRankKeys.cat([keys.take([3, 1]), keys.take([1, 2])])  # gathered, then a view
    torch.testing.assert_close(taken.dense(shared), every[[3, 1, 1, 2]], atol=0, rtol=0)


@pytest.mark.parametrize("chunk_prompts", [1, 2, 5])
def test_the_batched_decoder_equals_the_reference_for_any_chunk_size(chunk_prompts: int) -> None:
    decoder = _official_size_decoder()
    channels = decoder.transformer_dim
    generator = torch.Generator().manual_seed(chunk_prompts)
    batch = 6
    embedding = torch.randn((1, channels, 32, 32), generator=generator)
    pe = torch.randn((1, channels, 32, 32), generator=generator)
    sparse = torch.randn((batch, 2, channels), generator=generator)
    dense = torch.randn((1, channels, 32, 32), generator=generator).expand(batch, -1, -1, -1)
    with torch.no_grad():
        reference_masks, reference_iou = decoder.predict_masks(embedding, pe, sparse, dense)
    chunk_bytes = chunk_prompts * 32 * 32 * channels * 4
    with mock.patch.object(prompt_batch, "CHUNK_BYTES", chunk_bytes):
        batched = PromptBatchDecoder(decoder, embedding + dense[:1], pe)
        decoded = batched.tokens(sparse)
    assert decoded.chunk == chunk_prompts
    rows = torch.tensor([5, 0, 1, 3])
    masks = batched.masks(decoded, rows, slice(0, None))
    torch.testing.assert_close(decoded.iou, reference_iou, atol=1e-5, rtol=0)
    scale = max(1.0, float(reference_masks.abs().max()))
    assert float((masks - reference_masks[rows]).abs().max()) <= 1e-4 * scale
