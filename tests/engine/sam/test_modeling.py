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
