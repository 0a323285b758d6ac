"""DDP on 2 CPU processes (gloo): ranks stay in sync, shard the images, and match one process
taking both shards; only rank 0 writes state. Plus the CLI writing a loadable checkpoint."""

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine.sam.checkpoint import load_sam
from tests.training.test_interactive import small_sam
from tests.training.test_trainer import ADAM_NOISE
from training.loop.data import samples_from_scenes
from training.loop.scenes import generate_scene
from training.loop.train_cli import main as cli_main
from training.loop.trainer import STATE_FILE, TrainConfig, train

SCOPES = ("decoder", "full")
OPTIONS: dict[str, Any] = {"steps": 2, "iterations": 3, "masks_per_image": 2, "lr": 1e-3}


def _samples() -> list[Any]:
    # Every scene has >= 2 masks, so each rank's share of a step holds the same mask count and
    # the DDP average equals the single-process mean exactly (not only in expectation).
    return samples_from_scenes(generate_scene(seed, "A", (96, 128)) for seed in range(3))


def _worker(rank: int, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=2
    )
    try:
        samples = _samples()
        for scope in SCOPES:
            model = small_sam(seed=1 + rank)  # rank 1 starts elsewhere: DDP must broadcast
            config = TrainConfig(scope=scope, images_per_step=1, **OPTIONS)
            saved: list[Path] = []
            result = train(
                model,
                samples,
                config,
                work_dir=Path(root) / f"{scope}-rank{rank}",
                on_checkpoint=saved.append,
            )
            torch.save(
                {
                    "weights": model.state_dict(),
                    "curve": result.loss_curve,
                    "masks": result.masks_seen,
                    "saved": [str(path) for path in saved],
                },
                Path(root) / f"{scope}-rank{rank}.pt",
            )
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_with_both_shards(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)
    samples = _samples()
    for scope in SCOPES:
        ranks = [torch.load(tmp_path / f"{scope}-rank{r}.pt", weights_only=True) for r in (0, 1)]
        for key, value in ranks[0]["weights"].items():
            assert torch.equal(value, ranks[1]["weights"][key]), (scope, key)
        assert ranks[0]["masks"] == ranks[1]["masks"] == 2 * 2 * 2  # steps x images x masks
        assert ranks[0]["curve"] == ranks[1]["curve"]
        assert ranks[0]["saved"] == [str(tmp_path / f"{scope}-rank0" / STATE_FILE)]
        assert ranks[1]["saved"] == []
        assert not (tmp_path / f"{scope}-rank1" / STATE_FILE).exists()

        single = small_sam(seed=1)
        config = TrainConfig(scope=scope, images_per_step=2, **OPTIONS)
        result = train(single, samples, config, work_dir=tmp_path / f"{scope}-single")
        for key, value in single.state_dict().items():
            assert torch.allclose(value, ranks[0]["weights"][key], atol=ADAM_NOISE), (scope, key)
        assert [s for s, _ in result.loss_curve] == [s for s, _ in ranks[0]["curve"]]
        for (_, expected), (_, got) in zip(result.loss_curve, ranks[0]["curve"], strict=True):
            assert got == pytest.approx(expected, rel=1e-5)


def test_cli_trains_and_writes_a_loadable_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seed.pth"
    args = ["--arch", "vit_tiny", "--domain", "B", "--scenes", "2", "--scene-size", "48", "64"]
    args += ["--steps", "2", "--scope", "decoder", "--iterations", "1", "--masks-per-image", "1"]
    args += ["--out", str(out), "--work-dir", str(tmp_path / "work"), "--device", "cpu"]
    assert cli_main(args) == 0
    assert "2 steps on 1 process(es), 2 masks" in capsys.readouterr().out
    trained = load_sam(out, arch="vit_tiny")
    state = torch.load(tmp_path / "work" / STATE_FILE, weights_only=True)
    for key, value in trained.state_dict().items():
        assert torch.equal(value, state["model"][key]), key


def test_cli_reports_unusable_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--scenes", "1", "--scene-size", "48", "64", "--steps", "1", "--out"]
    code = cli_main([*args, str(tmp_path / "x.pth"), "--device", "cpu", "--lr", "-1"])
    assert code == 2
    assert "lr must be positive" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()
