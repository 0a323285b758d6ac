"""`MaskDecoder.predict_masks(deferred_shuffle=True)` (the ONNX export's upscaling) gives the
masks of the convolution path: the same sums in another order."""

import pytest
import torch
from torch import nn

from engine.sam.build import build_sam
from engine.sam.modeling.mask_decoder import MaskDecoder


def _decoder_with_varied_upscaling(arch: str, seed: int) -> tuple[MaskDecoder, int]:
    torch.manual_seed(seed)
    sam = build_sam(arch).eval()
    decoder = sam.mask_decoder
    # Fresh builds have LayerNorm weight 1 / bias 0: vary them so that the test sees them used.
    with torch.no_grad():
        for layer in decoder.output_upscaling:
            for name, param in layer.named_parameters():
                if name == "bias":
                    param.normal_(0.0, 0.5)
                elif param.dim() == 1:
                    param.normal_(1.0, 0.3)
    return decoder, int(sam.prompt_encoder.embed_dim)


@pytest.mark.parametrize(("arch", "batch", "tokens"), [("vit_tiny", 1, 2), ("vit_b", 2, 5)])
def test_the_deferred_shuffle_gives_the_convolution_paths_masks(
    arch: str, batch: int, tokens: int
) -> None:
    decoder, channels = _decoder_with_varied_upscaling(arch, seed=3)
    generator = torch.Generator().manual_seed(4)
    image = torch.randn(1, channels, 64, 64, generator=generator)
    pe = torch.randn(1, channels, 64, 64, generator=generator)
    sparse = torch.randn(batch, tokens, channels, generator=generator)
    dense = torch.randn(batch, channels, 64, 64, generator=generator)
    with torch.no_grad():
        masks, iou = decoder.predict_masks(image, pe, sparse, dense)
        shuffled, shuffled_iou = decoder.predict_masks(
            image, pe, sparse, dense, deferred_shuffle=True
        )
    assert shuffled.shape == masks.shape == (batch, 4, 256, 256)
    scale = float(masks.abs().max())
    assert float((shuffled - masks).abs().max()) <= 1e-5 * max(1.0, scale)
    torch.testing.assert_close(shuffled_iou, iou, rtol=0, atol=0)
    # A wrong block order would move whole 2 x 2 / 4 x 4 blocks: compare the sign maps too.
    assert float(((shuffled > 0) != (masks > 0)).float().mean()) <= 1e-4


def test_an_upscaling_of_another_shape_keeps_the_convolution_path() -> None:
    decoder, channels = _decoder_with_varied_upscaling("vit_tiny", seed=5)
    conv = decoder.output_upscaling[3]
    # Same weights as a 2 x 2 / 2 convolution but declared with padding 0 and stride 2 as a
    # plain Conv-like module the deferred path does not know: it must not be taken.
    decoder.output_upscaling[3] = nn.Sequential(conv)
    image = torch.randn(1, channels, 64, 64)
    sparse = torch.randn(1, 2, channels)
    dense = torch.zeros(1, channels, 64, 64)
    pe = torch.zeros(1, channels, 64, 64)
    with torch.no_grad():
        masks, _ = decoder.predict_masks(image, pe, sparse, dense)
        shuffled, _ = decoder.predict_masks(image, pe, sparse, dense, deferred_shuffle=True)
    torch.testing.assert_close(shuffled, masks, rtol=0, atol=0)


def test_the_predictor_decodes_with_the_deferred_shuffle_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SamPredictor takes the faster order on the CPU (the server's clicks, the tool's fallback),
    # and its masks are still the convolution path's.
    import numpy as np

    from engine.sam.modeling import mask_decoder
    from engine.sam.predictor import SamPredictor

    decoder, _ = _decoder_with_varied_upscaling("vit_tiny", seed=5)
    torch.manual_seed(5)
    sam = build_sam("vit_tiny").eval()
    sam.mask_decoder = decoder
    predictor = SamPredictor(sam)
    predictor.set_image(np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    calls: list[int] = []
    real = mask_decoder._masks_deferred_shuffle

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(mask_decoder, "_masks_deferred_shuffle", counted)
    point = np.array([[20.0, 30.0]])
    _, scores, low_res = predictor.predict(point, np.array([1]), multimask_output=True)
    assert calls == [1]
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(
            points=(
                torch.as_tensor(predictor.transform.apply_coords(point, (48, 64)))[None].float(),
                torch.tensor([[1]]),
            ),
            boxes=None,
            masks=None,
        )
        reference, iou = decoder(
            predictor.features, sam.prompt_encoder.get_dense_pe(), sparse, dense, True
        )
    assert calls == [1]  # the module's own default keeps the convolution path
    assert np.allclose(low_res, reference[0].numpy(), atol=1e-4)
    assert np.allclose(scores, iou[0].numpy(), atol=1e-5)
