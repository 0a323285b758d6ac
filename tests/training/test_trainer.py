"""The training driver: determinism, exact resume, stop, scopes, accumulation, bad data."""

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from engine.sam.modeling import Sam
from tests.training.test_interactive import small_sam
from training.loop.data import TrainSample, samples_from_scenes
from training.loop.scenes import generate_scene
from training.loop.trainer import STATE_FILE, TrainConfig, TrainProgress, train

SIZE = (96, 128)
# Small and short so each run takes a second or two; the layout is the real one (see small_sam).
QUICK: dict[str, Any] = {"iterations": 3, "masks_per_image": 2, "lr": 1e-3}
# Gradients equal up to summation order still differ after an AdamW step where the true gradient
# is ~0 (attention key biases: softmax ignores them), as Adam divides by the gradient's own size;
# a real difference (another image, a lost share) moves weights by about lr.
ADAM_NOISE = 0.1 * QUICK["lr"]


@pytest.fixture(scope="module")
def samples() -> list[TrainSample]:
    return samples_from_scenes(generate_scene(seed, "A", SIZE) for seed in range(3))


def weights(model: Sam) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def changed(before: dict[str, Tensor], after: dict[str, Tensor], prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def run(samples: list[TrainSample], work_dir: Path, seed: int = 0, **options: Any) -> Sam:
    model = small_sam(seed=1)
    config = TrainConfig(**{"steps": 2, "seed": seed, **QUICK, **options})
    train(model, samples, config, work_dir=work_dir)
    return model


def test_same_seed_gives_bit_identical_weights(samples: list[TrainSample], tmp_path: Path) -> None:
    first = weights(run(samples, tmp_path / "a", scope="decoder+prompt"))
    second = weights(run(samples, tmp_path / "b", scope="decoder+prompt"))
    other = weights(run(samples, tmp_path / "c", seed=1, scope="decoder+prompt"))
    assert same(first, second)
    assert not same(first, other)


def test_stop_then_resume_equals_a_straight_run(samples: list[TrainSample], tmp_path: Path) -> None:
    options: dict[str, Any] = {
        **QUICK,
        "scope": "full",
        "steps": 6,
        "images_per_step": 2,
        "warmup_steps": 2,
    }
    straight = small_sam(seed=1)
    direct = train(straight, samples, TrainConfig(**options), work_dir=tmp_path / "straight")

    resumed = small_sam(seed=1)
    progress: list[TrainProgress] = []
    saved: list[Path] = []
    config = TrainConfig(**options, checkpoint_every=100)
    first = train(
        resumed,
        samples,
        config,
        work_dir=tmp_path / "split",
        on_progress=progress.append,
        on_checkpoint=saved.append,
        should_stop=lambda: len(progress) >= 3,
    )
    assert first.stopped
    assert first.steps_done == 3
    assert saved == [tmp_path / "split" / STATE_FILE]
    assert not (tmp_path / "split" / (STATE_FILE + ".tmp")).exists()

    fresh = small_sam(seed=1)  # a new process would start from the initial weights again
    second = train(fresh, samples, config, work_dir=tmp_path / "split")
    assert not second.stopped
    assert second.steps_done == 6
    assert same(weights(fresh), weights(straight))
    assert second.loss_curve == direct.loss_curve
    assert second.masks_seen == direct.masks_seen == 6 * 2 * 2


def test_progress_after_every_step_and_checkpoints_on_schedule(
    samples: list[TrainSample], tmp_path: Path
) -> None:
    progress: list[TrainProgress] = []
    saved: list[Path] = []
    result = train(
        small_sam(),
        samples,
        TrainConfig(steps=4, checkpoint_every=2, **QUICK),
        work_dir=tmp_path,
        on_progress=progress.append,
        on_checkpoint=saved.append,
    )
    assert [p.step for p in progress] == [1, 2, 3, 4]
    assert all(p.total_steps == 4 for p in progress)
    assert [p.masks_seen for p in progress] == [2, 4, 6, 8]
    assert all(0.0 <= p.iou <= 1.0 and p.loss > 0 for p in progress)
    assert [loss for _, loss in result.loss_curve] == [p.loss for p in progress]
    assert len(saved) == 2  # at steps 2 and 4; the end coincides with step 4
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 4
    assert result.masks_per_second == pytest.approx(result.masks_seen / result.seconds)


def test_a_finished_run_resumed_does_nothing_more(
    samples: list[TrainSample], tmp_path: Path
) -> None:
    model = run(samples, tmp_path)
    before = weights(model)
    again = train(model, samples, TrainConfig(steps=2, **QUICK), work_dir=tmp_path)
    assert again.steps_done == 2
    assert len(again.loss_curve) == 2
    assert same(before, weights(model))


def test_resume_with_other_settings_is_refused(samples: list[TrainSample], tmp_path: Path) -> None:
    run(samples, tmp_path, scope="decoder")
    with pytest.raises(ValueError, match=r"other settings.*'scope': \('decoder', 'full'\)"):
        run(samples, tmp_path, scope="full")


@pytest.mark.parametrize(("loss_side", "side"), [(0, 64), (128, 128), (256, 256)])
def test_loss_side_is_the_grid_the_ground_truth_is_trained_at(
    samples: list[TrainSample],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loss_side: int,
    side: int,
) -> None:
    from training.loop import trainer as trainer_module

    seen: list[tuple[int, ...]] = []
    real = trainer_module.interactive_step

    def recording(model: Sam, embeddings: Tensor, gt: Tensor, **kwargs: Any) -> Any:
        seen.append(tuple(gt.shape[1:]))
        return real(model, embeddings, gt, **kwargs)

    monkeypatch.setattr(trainer_module, "interactive_step", recording)
    run(samples, tmp_path, loss_side=loss_side)
    # 0: the decoder's low-res side (64 for this 256 input); else as asked.
    assert seen
    assert set(seen) == {(side, side)}


def test_a_loss_side_that_does_not_divide_the_input_is_refused(
    samples: list[TrainSample], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="loss_side 96 must divide the model's input size 256"):
        run(samples, tmp_path, loss_side=96)


def test_a_state_written_before_loss_side_existed_resumes_with_the_default(
    samples: list[TrainSample], tmp_path: Path
) -> None:
    run(samples, tmp_path, steps=1)
    state = tmp_path / STATE_FILE
    payload = torch.load(state, weights_only=True)
    del payload["config"]["loss_side"]
    torch.save(payload, state)
    result = train(small_sam(seed=1), samples, TrainConfig(steps=2, **QUICK), work_dir=tmp_path)
    assert result.steps_done == 2
    assert len(result.loss_curve) == 2
    with pytest.raises(ValueError, match=r"'loss_side': \(0, 128\)"):
        train(small_sam(), samples, TrainConfig(steps=3, loss_side=128, **QUICK), work_dir=tmp_path)


def test_decoder_scope_embeds_each_image_once_and_trains_only_the_decoder(
    samples: list[TrainSample], tmp_path: Path
) -> None:
    model = small_sam(seed=1)
    before = weights(model)
    calls: list[int] = []
    model.image_encoder.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    config = TrainConfig(steps=6, scope="decoder", **QUICK)
    train(model, samples, config, work_dir=tmp_path)
    after = weights(model)
    assert sum(calls) == len(samples)  # 6 steps over 3 images: each embedded once
    assert changed(before, after, "mask_decoder.")
    assert not changed(before, after, "image_encoder.")
    assert not changed(before, after, "prompt_encoder.")
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert not model.training


def test_full_scope_trains_the_encoder_with_gradients_every_step(
    samples: list[TrainSample], tmp_path: Path
) -> None:
    model = small_sam(seed=1)
    before = weights(model)
    calls: list[bool] = []
    model.image_encoder.register_forward_hook(
        lambda _m, _a, out: calls.append(bool(out.requires_grad))
    )
    train(model, samples, TrainConfig(steps=3, scope="full", **QUICK), work_dir=tmp_path)
    assert calls == [True, True, True]
    assert changed(before, weights(model), "image_encoder.blocks.0.")


def test_accumulated_micro_batches_equal_one_bigger_batch(
    samples: list[TrainSample], tmp_path: Path
) -> None:
    one_batch = run(samples, tmp_path / "a", scope="full", steps=1, images_per_step=2)
    two_micro = run(samples, tmp_path / "b", scope="full", steps=1, accumulate=2)
    single = run(samples, tmp_path / "c", scope="full", steps=1)
    a, b, c = weights(one_batch), weights(two_micro), weights(single)
    assert all(torch.allclose(a[k], b[k], atol=ADAM_NOISE) for k in a)
    assert not all(torch.allclose(a[k], c[k], atol=ADAM_NOISE) for k in a)


def test_the_loss_falls_on_a_repeated_image(samples: list[TrainSample], tmp_path: Path) -> None:
    config = TrainConfig(steps=12, scope="decoder+prompt", iterations=3, masks_per_image=4, lr=3e-3)
    result = train(small_sam(seed=1), samples[:1], config, work_dir=tmp_path)
    losses = [loss for _, loss in result.loss_curve]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_bf16_on_cpu_trains_under_autocast(
    samples: list[TrainSample], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a CPU with AMX / AVX512-BF16, whatever this machine has: no warning then.
    monkeypatch.setattr("training.loop.trainer.native_bf16", lambda device: True)
    plain = weights(run(samples, tmp_path / "a"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bf16 = weights(run(samples, tmp_path / "b", bf16=True))
    # The weights stay float32 (autocast only lowers the matmuls), finite, and differ from the
    # float32 run: bf16 really was used.
    assert all(value.dtype == plain[name].dtype for name, value in bf16.items())
    assert all(torch.isfinite(value).all() for value in bf16.values())
    assert not same(plain, bf16)


def test_emulated_bf16_warns_once_and_still_trains_in_bf16(
    samples: list[TrainSample], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A round launched with a bf16 override on an AVX2-only CPU: honoured, but said to be slow.
    monkeypatch.setattr("training.loop.trainer.native_bf16", lambda device: False)
    with pytest.warns(RuntimeWarning, match="no native bf16") as caught:
        bf16 = weights(run(samples, tmp_path / "b", bf16=True))
    assert len([w for w in caught if "native bf16" in str(w.message)]) == 1  # not once per step
    assert not same(weights(run(samples, tmp_path / "a")), bf16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_on_cuda_trains_without_warning(samples: list[TrainSample], tmp_path: Path) -> None:
    model = small_sam(seed=1)
    before = weights(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = train(
            model,
            samples,
            TrainConfig(steps=2, bf16=True, scope="full", **QUICK),
            work_dir=tmp_path,
            device="cuda",
        )
    assert result.steps_done == 2
    assert all(np.isfinite(loss) for _, loss in result.loss_curve)
    assert changed(before, {k: v.cpu() for k, v in weights(model).items()}, "mask_decoder.")


def test_unusable_data_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    image = np.zeros((32, 48, 3), dtype=np.uint8)
    config = TrainConfig(steps=1, **QUICK)
    with pytest.raises(ValueError, match="no training samples"):
        train(small_sam(), [], config, work_dir=tmp_path / "a")
    whole = TrainSample("whole", image, (np.ones((32, 48), dtype=bool),))
    with pytest.raises(ValueError, match="no masks left"):
        train(small_sam(), [whole], config, work_dir=tmp_path / "b")
    bad = TrainSample("bad", image, ())
    object.__setattr__(bad, "masks", (np.ones((31, 48), dtype=bool),))  # bypasses __post_init__
    with pytest.raises(ValueError, match=r"'bad': mask 0 has shape \(31, 48\)"):
        train(small_sam(), [bad], config, work_dir=tmp_path / "c")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scope": "encoder"}, "unknown scope"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"accumulate": 0}, "accumulate must be a positive integer"),
        ({"max_mask_fraction": 0.0}, "max_mask_fraction"),
        ({"loss_side": -1}, "loss_side must be 0"),
        ({"loss_side": True}, "loss_side must be an integer"),
    ],
)
def test_bad_config_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)
