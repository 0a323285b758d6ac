"""Simulated interactive training step: schedule, prompts per iteration, gradients, learning."""

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torch import nn

from engine.sam.build import build_sam_from_config
from engine.sam.config import VIT_TINY
from engine.sam.modeling import Sam
from training.loop.interactive import ITERATIONS, interactive_step, point_schedule
from training.loop.scenes import generate_scene

IMAGE_SIZE = 256  # 16 x 16 embeddings, 64 x 64 low-res masks: the real layout, 16x less work
MASK_SIDE = 64


def small_sam(seed: int = 0) -> Sam:
    torch.manual_seed(seed)
    return build_sam_from_config(dataclasses.replace(VIT_TINY, image_size=IMAGE_SIZE))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def square_masks(count: int) -> torch.Tensor:
    gt = torch.zeros((count, MASK_SIDE, MASK_SIDE), dtype=torch.bool)
    for i in range(count):
        gt[i, 5 + i : 30 + i, 10 + 2 * i : 40] = True
    return gt


@pytest.fixture(scope="module")
def sam() -> Sam:
    return small_sam()


def test_point_schedule_has_two_pointless_iterations() -> None:
    seen: set[int] = set()
    for seed in range(30):
        adds = point_schedule(gen(seed))
        assert len(adds) == ITERATIONS == 11
        assert adds[0]
        assert not adds[-1]
        assert sum(adds) == 9  # the first prompt and 8 sampled points
        seen.add(adds.index(False))
    assert len(seen) > 3  # the intermediate pointless iteration moves with the seed
    assert seen <= set(range(1, 10))
    assert point_schedule(gen(0), 1) == [True]


def test_prompts_grow_with_the_schedule_and_masks_are_fed_back(sam: Sam) -> None:
    calls: list[dict[str, Any]] = []

    def record_encoder(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        points, boxes, masks = kwargs["points"], kwargs["boxes"], kwargs["masks"]
        calls.append(
            {
                "points": 0 if points is None else points[0].shape[1],
                "box": boxes is not None,
                "mask": None if masks is None else tuple(masks.shape[1:]),
            }
        )

    def record_decoder(
        _: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> None:
        calls[-1]["candidates"] = out[0].shape[1]

    hooks = [
        sam.prompt_encoder.register_forward_pre_hook(record_encoder, with_kwargs=True),
        sam.mask_decoder.register_forward_hook(record_decoder, with_kwargs=True),
    ]
    try:
        embeddings = torch.randn(1, 64, 16, 16)
        result = interactive_step(sam, embeddings, square_masks(6), generator=gen(4))
    finally:
        for hook in hooks:
            hook.remove()
    assert result.first_is_box.any()
    assert not result.first_is_box.all()
    groups = 2
    assert len(calls) == groups * ITERATIONS
    added = 0
    for step in range(ITERATIONS):
        added += result.adds_point[step] and step > 0
        for call in calls[groups * step : groups * (step + 1)]:
            assert call["candidates"] == (3 if step == 0 else 1)
            assert call["mask"] == (None if step == 0 else (1, MASK_SIDE, MASK_SIDE))
            # Point-first rows: 1 + sampled points; box-first rows: the box + sampled points.
            assert call["points"] == added + (0 if call["box"] else 1)
    assert added == 8
    assert len(result.iteration_iou) == len(result.iteration_loss) == ITERATIONS
    assert all(0.0 <= iou <= 1.0 for iou in result.iteration_iou)


def test_gradients_reach_prompt_encoder_and_decoder_only(sam: Sam) -> None:
    sam.zero_grad(set_to_none=True)
    embeddings = torch.randn(2, 64, 16, 16)
    result = interactive_step(
        sam, embeddings, square_masks(4), generator=gen(5), image_index=torch.tensor([0, 1, 1, 0])
    )
    assert result.loss.requires_grad
    assert result.loss.dim() == 0
    result.loss.backward()
    assert sam.mask_decoder.iou_prediction_head.layers[0].weight.grad is not None
    assert sam.prompt_encoder.mask_downscaling[0].weight.grad is not None  # mask fed back
    assert all(p.grad is None for p in sam.image_encoder.parameters())
    sam.zero_grad(set_to_none=True)


def test_training_decodes_with_the_deferred_shuffle_and_its_gradients(
    sam: Sam, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the CPU the interaction decodes as SamPredictor does (the same sums, ~8 % more masks/s
    # in a vit_tiny step); the upscaling's weights get their gradients through that path.
    from engine.sam.modeling import mask_decoder

    calls: list[int] = []
    real = mask_decoder._masks_deferred_shuffle

    def counted(*args: Any) -> torch.Tensor:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(mask_decoder, "_masks_deferred_shuffle", counted)
    sam.zero_grad(set_to_none=True)
    result = interactive_step(sam, torch.randn(1, 64, 16, 16), square_masks(3), generator=gen(6))
    result.loss.backward()
    assert len(calls) == ITERATIONS
    assert sam.mask_decoder.output_upscaling[0].weight.grad is not None
    assert sam.mask_decoder.output_upscaling[3].weight.grad is not None
    sam.zero_grad(set_to_none=True)


def test_same_seed_same_run_other_seed_other_run(sam: Sam) -> None:
    embeddings = torch.randn(1, 64, 16, 16, generator=gen(9))
    gt = square_masks(5)
    first = interactive_step(sam, embeddings, gt, generator=gen(11))
    again = interactive_step(sam, embeddings, gt, generator=gen(11))
    other = interactive_step(sam, embeddings, gt, generator=gen(12))
    assert first.iteration_loss == again.iteration_loss
    assert first.iteration_iou == again.iteration_iou
    assert torch.equal(first.first_is_box, again.first_is_box)
    assert first.iteration_loss != other.iteration_loss


def test_mismatched_embeddings_need_an_index(sam: Sam) -> None:
    with pytest.raises(ValueError, match="image_index"):
        interactive_step(sam, torch.randn(2, 64, 16, 16), square_masks(3), generator=gen(0))
    with pytest.raises(ValueError, match="bool"):
        interactive_step(sam, torch.randn(1, 64, 16, 16), square_masks(3).float(), generator=gen(0))


def scene_batch(model: Sam) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings 3 x C x 16 x 16 of three domain-A scenes, their 3 largest masks each at
    64 x 64 over the padded input frame, and each mask's image index."""
    images, masks, index = [], [], []
    for i, seed in enumerate((1, 2, 3)):
        scene = generate_scene(seed, "A", (192, 256))
        image = torch.from_numpy(np.array(scene.image)).permute(2, 0, 1).float()
        images.append(model.preprocess(image[None])[0])
        for mask in sorted(scene.masks, key=lambda m: -int(m.sum()))[:3]:
            full = torch.zeros((IMAGE_SIZE, IMAGE_SIZE))
            full[:192, :256] = torch.from_numpy(np.array(mask)).float()
            masks.append(nnf.avg_pool2d(full[None, None], 4)[0, 0] >= 0.5)
            index.append(i)
    with torch.no_grad():
        embeddings = model.image_encoder(torch.stack(images))
    return embeddings, torch.stack(masks), torch.tensor(index)


def test_a_few_adamw_steps_on_the_decoder_reduce_the_loss() -> None:
    model = small_sam(seed=1)
    embeddings, gt, index = scene_batch(model)
    assert gt.flatten(1).any(dim=1).all()

    def evaluate() -> float:
        with torch.no_grad():
            return float(
                interactive_step(model, embeddings, gt, generator=gen(0), image_index=index).loss
            )

    before = evaluate()
    optimizer = torch.optim.AdamW(model.mask_decoder.parameters(), lr=2e-3, weight_decay=0.1)
    model.train()
    for step in range(6):
        optimizer.zero_grad(set_to_none=True)
        result = interactive_step(
            model, embeddings, gt, generator=gen(100 + step), image_index=index
        )
        result.loss.backward()
        optimizer.step()
    model.eval()
    after = evaluate()
    assert after < 0.8 * before
