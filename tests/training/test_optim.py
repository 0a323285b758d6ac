"""Scopes, layer-wise lr, the warmup + step-decay schedule, accumulation and exact resume."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from engine.sam.modeling import Sam
from tests.training.test_interactive import gen, small_sam, square_masks
from training.loop.interactive import interactive_step
from training.loop.optim import (
    LAYER_DECAY,
    accumulate,
    build_optimizer,
    build_scheduler,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
    trainable_parameters,
)

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
TRAINED = {
    "decoder": {"mask_decoder"},
    "decoder+prompt": {"mask_decoder", "prompt_encoder"},
    "full": set(PARTS),
}


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def train_steps(
    model: Sam,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    generator: torch.Generator,
    steps: int,
) -> None:
    """A few full-model steps: a fresh random image (global torch RNG) through the encoder,
    then the interactive loss with prompts from ``generator`` — so both RNGs must resume."""
    gt = square_masks(3)
    for _ in range(steps):
        image = torch.randn(1, 3, 256, 256)
        optimizer.zero_grad(set_to_none=True)
        embeddings = model.image_encoder(image)
        interactive_step(model, embeddings, gt, generator=generator, iterations=3).loss.backward()
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("scope", ["decoder", "decoder+prompt", "full"])
def test_scope_freezes_the_rest_and_only_trains_its_parts(scope: str) -> None:
    model = small_sam(seed=2)
    optimizer = build_optimizer(model, scope, lr=1e-3)  # type: ignore[arg-type]
    for part in PARTS:
        flags = {p.requires_grad for p in getattr(model, part).parameters()}
        assert flags == {part in TRAINED[scope]}, part
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}

    before = snapshot(model)
    scheduler = build_scheduler(optimizer, warmup_steps=0, decay_steps=[], decay_factor=0.1)
    train_steps(model, optimizer, scheduler, gen(0), steps=1)
    after = snapshot(model)
    for part in PARTS:
        changed = [not torch.equal(before[n], after[n]) for n in before if n.startswith(part)]
        if part in TRAINED[scope]:
            assert sum(changed) > len(changed) // 2, part  # most of a trained part moves
        else:
            assert not any(changed), part


def test_unknown_scope_and_bad_decay_are_refused() -> None:
    model = small_sam()
    with pytest.raises(ValueError, match="scope"):
        trainable_parameters(model, "encoder")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer_decay"):
        trainable_parameters(model, "full", layer_decay=1.5)


def test_layer_wise_lr_decays_towards_the_input() -> None:
    model = small_sam()
    depth = len(model.image_encoder.blocks)
    assert depth == 2
    optimizer = build_optimizer(model, "full", lr=1e-3, layer_decay=0.5, weight_decay=0.05)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert all(g["weight_decay"] == 0.05 for g in optimizer.param_groups)
    encoder = model.image_encoder
    assert lr_of[id(encoder.patch_embed.proj.weight)] == pytest.approx(1e-3 * 0.5**3)
    assert encoder.pos_embed is not None
    assert lr_of[id(encoder.pos_embed)] == pytest.approx(1e-3 * 0.5**3)
    for i, block in enumerate(encoder.blocks):
        for param in block.parameters():
            assert lr_of[id(param)] == pytest.approx(1e-3 * 0.5 ** (depth - i))
    full_lr = [*encoder.neck.parameters(), *model.mask_decoder.parameters()]
    full_lr += list(model.prompt_encoder.parameters())
    assert [lr_of[id(p)] for p in full_lr] == pytest.approx([1e-3] * len(full_lr))
    assert len(lr_of) == sum(1 for _ in model.parameters())

    # The default factor is the paper's 0.8.
    default = build_optimizer(small_sam(), "full", lr=1.0)
    assert min(g["lr"] for g in default.param_groups) == pytest.approx(LAYER_DECAY**3)


def test_scheduler_warms_up_linearly_then_steps_down() -> None:
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [param], "lr": 2.0}, {"params": [], "lr": 1.0}])
    scheduler = build_scheduler(optimizer, warmup_steps=4, decay_steps=[6, 9], decay_factor=0.1)
    seen = []
    for _ in range(11):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01]
    assert [lrs[0] for lrs in seen] == pytest.approx([2.0 * f for f in expected])
    assert [lrs[1] for lrs in seen] == pytest.approx(expected)  # every group keeps its ratio
    with pytest.raises(ValueError, match="ascending"):
        build_scheduler(optimizer, warmup_steps=1, decay_steps=[5, 3], decay_factor=0.1)


def test_accumulated_micro_batches_equal_one_big_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    inputs, targets = torch.randn(10, 5), torch.randn(10, 1)

    def loss_fn(batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return ((model(x) - y) ** 2).mean()

    full_loss = loss_fn((inputs, targets))
    full_loss.backward()
    full = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)

    sizes = [4, 3, 3]  # uneven on purpose: plain averaging of micro-batch means would be off
    batches = list(zip(inputs.split(sizes), targets.split(sizes), strict=True))
    loss = accumulate(loss_fn, batches, sizes)
    accumulated = [p.grad for p in model.parameters() if p.grad is not None]
    assert loss == pytest.approx(float(full_loss.detach()), abs=1e-6)
    assert len(accumulated) == len(full) == 4
    for got, want in zip(accumulated, full, strict=True):
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="shorter"):
        accumulate(loss_fn, batches, [4, 3])


def test_rng_state_round_trips() -> None:
    generator = gen(3)
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    state = capture_rng_state(generator)
    first = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    restore_rng_state(state, generator)
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert torch.equal(first[3], again[3])


def test_resume_continues_bit_for_bit(tmp_path: Path) -> None:
    n, m = 2, 2

    def fresh() -> tuple[Sam, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
        model = small_sam(seed=4)
        optimizer = build_optimizer(model, "full", lr=2e-3)
        # Warmup ends and a decay milestone falls inside the resumed part.
        return model, optimizer, build_scheduler(optimizer, 2, [3], 0.5)

    straight, straight_opt, sched = fresh()
    torch.manual_seed(7)  # after fresh(), which seeds for the weights
    train_steps(straight, straight_opt, sched, gen(21), n + m)

    model, opt, sched = fresh()
    torch.manual_seed(7)
    generator = gen(21)
    train_steps(model, opt, sched, generator, n)
    path = tmp_path / "state.pt"
    save_training_state(path, model, opt, sched, n, capture_rng_state(generator))
    assert not (tmp_path / "state.pt.tmp").exists()
    torch.manual_seed(999)  # the resumed run must not depend on what ran in between
    del model, opt, sched

    model, opt, sched = fresh()
    other_generator = gen(0)
    step, rng_state = load_training_state(path, model, opt, sched)
    restore_rng_state(rng_state, other_generator)
    assert step == n
    assert sched.last_epoch == n
    train_steps(model, opt, sched, other_generator, m)

    expected, got = snapshot(straight), snapshot(model)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in straight_opt.param_groups]

    # Control: without the RNG restore the continuation differs, so the check above has teeth.
    model, opt, sched = fresh()
    load_training_state(path, model, opt, sched)
    train_steps(model, opt, sched, gen(0), m)
    assert not all(torch.equal(expected[k], v) for k, v in snapshot(model).items())
