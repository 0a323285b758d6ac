"""Golden outputs of the official segment-anything package, for engine/sam's parity tests.

Runs in a SEPARATE environment (the official package needs torchvision, which maskloop does not
depend on)::

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 segment-anything
    /tmp/refvenv/bin/python tools/goldens/make_sam_goldens.py            # committed goldens
    /tmp/refvenv/bin/python tools/goldens/make_sam_goldens.py --full-vit-b /tmp/sam-parity

The default run writes, under tests/engine/sam/goldens/:
- tiny_sam.pth: an official `Sam` with engine.sam.config.VIT_TINY's hyper-parameters and
  seeded random weights, rounded to float16 values and stored as float16 (half the bytes; the
  float32 model computes with exactly these values on both sides);
- tiny_goldens.npz: the images, the prompts and the official predictor's outputs (see
  `run_cases`; low-res logits subsampled 2x and stored as float16 to keep the file small);
- official_keys.json: key -> shape of the official vit_b / vit_l / vit_h state dicts.

`--full-vit-b DIR` writes a random vit_b (float32) and its outputs plus timings into DIR for
bench/sam_parity.py; nothing there is committed (about 360 MB).
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from engine.sam.config import VIT_TINY, SamConfig  # noqa: E402  (plain dataclasses, no torch)

GOLDENS = REPO / "tests" / "engine" / "sam" / "goldens"
TOKEN_TABLES = (
    "point_embeddings",
    "not_a_point_embed",
    "no_mask_embed",
    "iou_token",
    "mask_tokens",
)


def build_official(config: SamConfig) -> Sam:
    """The official classes wired with `config` (what its build_sam does with fixed numbers)."""
    grid = config.image_size // config.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.mlp_ratio,
            norm_layer=lambda dim: torch.nn.LayerNorm(dim, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
                attention_downsample_rate=config.attention_downsample_rate,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def random_state(sam: Sam, seed: int, half_exact: bool) -> dict[str, torch.Tensor]:
    """Seeded weights with every tensor non-trivial (no zero positions, no unit norms)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in sam.state_dict().items():
        noise = torch.randn(tensor.shape, generator=generator)
        if any(table in name for table in TOKEN_TABLES) or "gaussian_matrix" in name:
            value = noise
        elif (
            "norm" in name
            or "neck.1" in name
            or "neck.3" in name
            or ("output_upscaling.1" in name or "mask_downscaling.1" in name)
            or "mask_downscaling.4" in name
        ):
            value = (1.0 + 0.1 * noise) if name.endswith("weight") else 0.1 * noise
        elif "pos_embed" in name or "rel_pos" in name:
            value = 0.1 * noise
        elif name.endswith("bias"):
            value = 0.02 * noise
        else:
            fan_in = tensor[0].numel() if tensor.ndim > 1 else tensor.numel()
            value = noise / fan_in**0.5
        if half_exact:
            value = value.half().float()
        state[name] = value
    sam.load_state_dict(state, strict=True)
    return state


def make_images() -> list[np.ndarray]:
    """Two small non-square RGB images with smooth gradients and a few solid shapes."""
    images = []
    for seed, (height, width) in ((1, (300, 200)), (2, (180, 320))):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        image = np.stack(
            [255 * xx / width, 255 * yy / height, 128 + 60 * np.sin(xx / 17 + yy / 23)], axis=-1
        )
        for _ in range(4):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            radius = rng.uniform(15, 60)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
            image[inside] = rng.uniform(0, 255, size=3)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


def make_cases(images: list[np.ndarray]) -> list[dict[str, Any]]:
    """Prompt sets per image; `mask_from` names an earlier case whose best logits feed back."""
    cases: list[dict[str, Any]] = []
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        first = len(cases)
        cases.append(
            {"image": index, "points": [[0.4 * width, 0.5 * height]], "labels": [1], "multi": True}
        )
        cases.append(
            {
                "image": index,
                "points": [[0.5 * width, 0.5 * height], [0.1 * width, 0.9 * height]],
                "labels": [1, 0],
                "box": [0.2 * width, 0.25 * height, 0.8 * width, 0.75 * height],
                "multi": False,
            }
        )
        cases.append({"image": index, "box": [3.0, 5.0, width - 10.0, height / 2], "multi": True})
        cases.append(
            {
                "image": index,
                "points": [[0.4 * width, 0.5 * height], [0.7 * width, 0.3 * height]],
                "labels": [1, 1],
                "mask_from": first,
                "multi": False,
            }
        )
    return cases


def run_cases(
    sam: Sam, images: list[np.ndarray], cases: list[dict[str, Any]], repeats: int = 1
) -> dict[str, np.ndarray]:
    """Official predictor outputs (and timings) for every case, as flat npz arrays."""
    predictor = SamPredictor(sam)
    out: dict[str, np.ndarray] = {}
    embed_seconds, predict_seconds = [], []
    best_logits: dict[int, np.ndarray] = {}
    for index, image in enumerate(images):
        start = time.perf_counter()
        predictor.set_image(image)
        embed_seconds.append(time.perf_counter() - start)
        out[f"img{index}/image"] = image
        out[f"img{index}/embedding"] = predictor.get_image_embedding().numpy()
        for number, case in enumerate(cases):
            if case["image"] != index:
                continue
            kwargs: dict[str, Any] = {"multimask_output": case["multi"]}
            if "points" in case:
                kwargs["point_coords"] = np.array(case["points"], dtype=np.float64)
                kwargs["point_labels"] = np.array(case["labels"], dtype=np.int64)
            if "box" in case:
                kwargs["box"] = np.array(case["box"], dtype=np.float64)
            if "mask_from" in case:
                kwargs["mask_input"] = best_logits[case["mask_from"]][None]
            for _ in range(repeats):
                start = time.perf_counter()
                masks, iou, low_res = predictor.predict(**kwargs)
                predict_seconds.append(time.perf_counter() - start)
            best_logits[number] = low_res[int(np.argmax(iou))]
            prefix = f"case{number}/"
            out[prefix + "image_index"] = np.array(index)
            out[prefix + "multimask"] = np.array(case["multi"])
            out[prefix + "mask_from"] = np.array(case.get("mask_from", -1))
            for key in ("point_coords", "point_labels", "box"):
                if key in kwargs:
                    out[prefix + key] = kwargs[key]
            out[prefix + "masks_shape"] = np.array(masks.shape)
            out[prefix + "masks_packed"] = np.packbits(masks.astype(bool).ravel())
            out[prefix + "iou"] = iou.astype(np.float32)
            out[prefix + "low_res"] = low_res
    out["n_images"] = np.array(len(images))
    out["n_cases"] = np.array(len(cases))
    out["embed_seconds"] = np.array(embed_seconds)
    out["predict_seconds"] = np.array(predict_seconds)
    return out


def official_keys() -> dict[str, dict[str, list[int]]]:
    """key -> shape of each official architecture, built on the meta device (no weights)."""
    keys = {}
    for arch in ("vit_b", "vit_l", "vit_h"):
        with torch.device("meta"):
            sam = sam_model_registry[arch]()
        keys[arch] = {name: list(t.shape) for name, t in sam.state_dict().items()}
    return keys


def write_tiny(out_dir: Path) -> None:
    torch.manual_seed(0)
    sam = build_official(VIT_TINY)
    state = random_state(sam, seed=1234, half_exact=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in state.items()}, out_dir / "tiny_sam.pth")
    images = make_images()
    outputs = run_cases(sam, images, make_cases(images))
    del outputs["embed_seconds"], outputs["predict_seconds"]  # keep the file reproducible
    for key in [k for k in outputs if k.endswith("/low_res")]:
        # Every other row and column, float16: a quarter of the bytes, still every region;
        # the full-resolution masks check the whole logit field's sign.
        outputs[key] = outputs[key][:, ::2, ::2].astype(np.float16)
    np.savez_compressed(out_dir / "tiny_goldens.npz", **outputs)
    (out_dir / "official_keys.json").write_text(json.dumps(official_keys(), indent=0) + "\n")
    print(f"wrote goldens to {out_dir}")


def write_full_vit_b(out_dir: Path, repeats: int) -> None:
    with torch.device("meta"):
        sam = sam_model_registry["vit_b"]()
    sam = sam.to_empty(device="cpu")
    sam.pixel_mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    sam.pixel_std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    state = random_state(sam, seed=4321, half_exact=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, out_dir / "vit_b_random.pth")
    images = make_images()
    with torch.no_grad():
        outputs = run_cases(sam, images, make_cases(images), repeats=repeats)
    outputs["torch_threads"] = np.array(torch.get_num_threads())
    np.savez_compressed(out_dir / "vit_b_goldens.npz", **outputs)
    print(f"wrote {out_dir}; official set_image s: {outputs['embed_seconds'].round(3).tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=GOLDENS)
    parser.add_argument("--full-vit-b", type=Path, metavar="DIR", default=None)
    parser.add_argument("--repeats", type=int, default=5, help="predict timing repeats (vit_b)")
    args = parser.parse_args()
    if args.full_vit_b is not None:
        write_full_vit_b(args.full_vit_b, args.repeats)
    else:
        write_tiny(args.out_dir)


if __name__ == "__main__":
    main()
