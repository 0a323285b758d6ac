"""Building blocks: windows, relative positions, the fused attention option."""

import torch

from engine.sam.modeling.relative_position import relative_positions
from engine.sam.modeling.sam import Sam
from engine.sam.modeling.vit_attention import VitAttention
from engine.sam.modeling.vit_block import window_partition, window_unpartition


def test_window_partition_pads_and_unpartition_restores_the_map() -> None:
    x = torch.randn(2, 20, 30, 8)
    windows, padded = window_partition(x, 14)
    assert padded == (28, 42)
    assert windows.shape == (2 * 2 * 3, 14, 14, 8)
    assert torch.equal(windows[0], x[0, :14, :14])
    assert torch.equal(window_unpartition(windows, 14, padded, (20, 30)), x)


def test_relative_positions_index_by_offset() -> None:
    table = torch.arange(7, dtype=torch.float32)[:, None]  # offsets -3..3 -> rows 0..6
    gathered = relative_positions(4, 4, table)[:, :, 0]
    assert gathered[0, 0] == 3  # offset 0
    assert gathered[3, 0] == 6  # query 3 after key 0
    assert gathered[0, 3] == 0  # query 0 before key 3


def test_relative_positions_resample_a_table_of_another_length() -> None:
    table = torch.randn(27, 4)
    assert relative_positions(64, 64, table).shape == (64, 64, 4)


def test_fused_attention_matches_the_explicit_path() -> None:
    torch.manual_seed(0)
    attention = VitAttention(32, num_heads=2, input_size=(14, 14))
    with torch.no_grad():
        attention.rel_pos_h.normal_(0, 0.5)
        attention.rel_pos_w.normal_(0, 0.5)
        x = torch.randn(3, 14, 14, 32)
        attention.use_sdpa = False
        explicit = attention(x)
        attention.use_sdpa = True
        fused = attention(x)
    assert fused.shape == explicit.shape
    assert float((fused - explicit).abs().max()) < 1e-5


def test_encoder_sdpa_switch_keeps_the_embedding(tiny_sam: Sam) -> None:
    torch.manual_seed(1)
    image = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        tiny_sam.image_encoder.set_sdpa(False)
        try:
            explicit = tiny_sam.image_encoder(image)
            tiny_sam.image_encoder.set_sdpa(True)
            fused = tiny_sam.image_encoder(image)
        finally:
            tiny_sam.image_encoder.set_sdpa(None)
    scale = float(explicit.abs().max())
    assert float((fused - explicit).abs().max()) <= 1e-4 * scale


def test_postprocess_crops_the_padding_before_resizing(tiny_sam: Sam) -> None:
    low_res = torch.zeros(1, 1, 256, 256)
    low_res[..., :, 192:] = 5.0  # only the padded right quarter is "on"
    masks = tiny_sam.postprocess_masks(low_res, input_size=(1024, 768), original_size=(400, 300))
    assert masks.shape == (1, 1, 400, 300)
    # The padded columns are cropped; only bilinear bleed reaches the last original column.
    assert float(masks[..., :-1].abs().max()) == 0.0
    assert float(masks.max()) < 1.0


def test_two_way_transformer_works_on_token_major_keys(tiny_sam: Sam) -> None:
    """The image keys are copied once into B x HW x C order (every later add and LayerNorm runs
    on contiguous rows); the result is the same as from the permuted view."""
    from engine.sam.modeling.two_way_transformer import TwoWayTransformer

    transformer = tiny_sam.mask_decoder.transformer
    assert isinstance(transformer, TwoWayTransformer)
    generator = torch.Generator().manual_seed(3)
    channels = transformer.embedding_dim
    image = torch.randn(1, channels, 16, 16, generator=generator)
    pe = torch.randn(1, channels, 16, 16, generator=generator)
    tokens = torch.randn(1, 7, channels, generator=generator)
    with torch.no_grad():
        queries, keys = transformer(image, pe, tokens)
        # Reference: the blocks fed the permuted views as they are.
        ref_keys = image.flatten(2).permute(0, 2, 1)
        ref_pe = pe.flatten(2).permute(0, 2, 1)
        ref_queries = tokens
        for layer in transformer.layers:
            ref_queries, ref_keys = layer(
                queries=ref_queries, keys=ref_keys, query_pe=tokens, key_pe=ref_pe
            )
        attn = transformer.final_attn_token_to_image(
            q=ref_queries + tokens, k=ref_keys + ref_pe, v=ref_keys
        )
        ref_queries = transformer.norm_final_attn(ref_queries + attn)
    assert keys.is_contiguous()
    assert keys.shape == (1, 256, channels)
    assert torch.allclose(keys, ref_keys, atol=1e-5)
    assert torch.allclose(queries, ref_queries, atol=1e-5)
