"""The official decoder with trained weights, for the latency benchmarks (model ``official``).

Every official checkpoint (vit_b, vit_l, vit_h) has the same prompt encoder and mask decoder:
256 channels, MLP 2048, 8 heads. That decoder is what a click costs on the server and in the
browser. Random weights of its size answer with noise (hundreds of thousands of runs per mask,
each one encoded, sent and drawn), which no trained checkpoint does. This model puts that
decoder on ``vit_tiny``'s encoder (only the embedding's shape, 256 x 64 x 64, reaches the
decoder) and trains it with maskloop's own loop on domain-A scenes, as ``train_seed.sh`` does
the seed: a first stage at the 256 input, a short one at 1024. Its masks are object masks, so
a click costs what it costs with a real checkpoint.

Trained on first use and kept under ``var/bench-models/``, named by a hash of the training
commands and the precision (bf16 where the CPU has it natively): 7.5 minutes on a 2-core Zen 5
VM with native bf16, measured; on CPUs without it fp32, by estimate 2-3 times that.

    .venv/bin/python -m bench.trained_decoder        # train now (or print the cached path)
"""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "var" / "bench-models"

# vit_tiny's encoder; the official prompt encoder and mask decoder.
OFFICIAL_DECODER = [
    "--arch", "vit_tiny",
    "--set", "prompt_embed_dim=256",
    "--set", "decoder_mlp_dim=2048",
    "--set", "decoder_num_heads=8",
    "--set", "iou_head_hidden_dim=256",
]  # fmt: skip
_COMMON = ["--domain", "A", "--scenes", "200", "--scope", "full", "--checkpoint-every", "500"]
STAGES: list[list[str]] = [
    # From random weights at the 256 input: segment from one point or box.
    [*OFFICIAL_DECODER, *_COMMON, "--image-size", "256", "--steps", "2000", "--lr", "1e-3",
     "--warmup-steps", "50", "--decay-steps", "1700", "--iterations", "1",
     "--masks-per-image", "16"],
    # To the full 1024 input (position tables resampled), the prompts fed back.
    ["--arch", "vit_tiny", *_COMMON, "--steps", "100", "--lr", "2e-4", "--iterations", "2",
     "--masks-per-image", "8"],
]  # fmt: skip


def _bf16() -> bool:
    import torch

    from engine.sam.device import native_bf16

    return native_bf16(torch.device("cpu"))


def official_decoder_checkpoint(cache: Path = CACHE) -> Path:
    """The trained model's checkpoint, training it first when the cache lacks it."""
    bf16 = _bf16()
    key = hashlib.sha256(json.dumps([STAGES, bf16]).encode()).hexdigest()[:16]
    out = cache / f"official_decoder_{key}.pth"
    if out.exists():
        return out
    work = cache / f"work_{key}"
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"training the official-decoder benchmark model once ({'bf16' if bf16 else 'fp32'}), "
        f"cached as {out}",
        flush=True,
    )
    previous: Path | None = None
    for index, stage in enumerate(STAGES, start=1):
        stage_out = work / f"stage{index}.pth"
        if not stage_out.exists():  # each stage resumes from its work dir when interrupted
            command = [sys.executable, "-m", "training.loop.train_cli", *stage]
            command += ["--work-dir", str(work / f"stage{index}"), "--out", str(stage_out)]
            command += ["--init", str(previous)] if previous is not None else []
            command += ["--bf16"] if bf16 else []
            subprocess.run(command, cwd=REPO, check=True)
        previous = stage_out
    assert previous is not None
    previous.replace(out)
    shutil.rmtree(work)  # the stages' resumable states, no longer needed
    return out


if __name__ == "__main__":
    print(official_decoder_checkpoint())
