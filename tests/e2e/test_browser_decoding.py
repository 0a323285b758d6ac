"""Browser-side decoding in a real browser: the masks are the server's, the browser runs the
low-res decoder variant, and upscale.js resizes logits exactly as SAM's postprocessing does."""

import base64
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from engine.sam.transforms import ResizeLongestSide
from tests.e2e.conftest import LiveWeb, static_module_page
from tests.e2e.test_tool import log_in, make_setup, rle_mask, tool_data, tool_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PARITY_BAR = 0.001  # browser vs server: at most 0.1 % of the pixels may differ

PROMPT_CHAINS = [
    [{"points": [[150, 130]], "labels": [1], "box": None}],
    [{"points": [[150, 130], [380, 200]], "labels": [1, 0], "box": None}],
    [{"points": [], "labels": [], "box": [60, 40, 260, 250]}],
    [{"points": [[340, 120]], "labels": [0], "box": [60, 40, 260, 250]}],
    [  # each step feeds the previous best candidate back as the mask input
        {"points": [[150, 130]], "labels": [1], "box": None},
        {"points": [[150, 130], [90, 200]], "labels": [1, 1], "box": None},
        {"points": [[150, 130], [90, 200], [400, 60]], "labels": [1, 1, 0], "box": None},
    ],
]


def scaled_chains(width: int, height: int) -> list[list[dict]]:
    """PROMPT_CHAINS (drawn for a 517 x 389 image) scaled to a width x height image."""
    sx, sy = width / 517, height / 389
    chains = json.loads(json.dumps(PROMPT_CHAINS))
    for chain in chains:
        for prompt in chain:
            prompt["points"] = [[round(x * sx), round(y * sy)] for x, y in prompt["points"]]
            if prompt["box"]:
                x0, y0, x1, y1 = prompt["box"]
                prompt["box"] = [round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)]
    return chains


def test_browser_and_server_decoding_give_the_same_masks(
    live_web: LiveWeb, browser_context
) -> None:
    # Landscape smaller than the 1024 frame, landscape larger, portrait: every resize direction.
    setup = make_setup([(517, 389), (1600, 1100), (380, 900)], embed=True)
    page = browser_context.new_page()
    onnx_requests: list[str] = []
    page.on("request", lambda r: onnx_requests.append(r.url) if "/onnx/" in r.url else None)
    log_in(page, live_web)
    for image in setup.images:
        page.goto(tool_url(live_web, setup, image=image.pk))
        page.wait_for_function("() => document.getElementById('tool').dataset.state === 'ready'")
        assert tool_data(page, "decoder") == "browser"
        for chain in scaled_chains(image.width, image.height):
            browser = page.evaluate("(c) => window.maskloopTool.decodeVia('browser', c)", chain)
            server = page.evaluate("(c) => window.maskloopTool.decodeVia('server', c)", chain)
            assert len(browser) == len(server) == len(chain)
            for step_b, step_s in zip(browser, server, strict=True):
                assert len(step_b) == len(step_s)
                for cand_b, cand_s in zip(step_b, step_s, strict=True):
                    mask_b, mask_s = rle_mask(cand_b["rle"]), rle_mask(cand_s["rle"])
                    assert mask_b.shape == (image.height, image.width)
                    assert mask_b.sum() > 0
                    differing = float((mask_b != mask_s).mean())
                    assert differing <= PARITY_BAR, (chain, differing)
                    assert abs(cand_b["score"] - cand_s["score"]) < 1e-3
    # The browser never downloads the official (full-size masks) graph.
    assert onnx_requests
    assert all(url.endswith("/onnx/?variant=low_res") for url in onnx_requests), onnx_requests


def test_javascript_upscaling_matches_sams_postprocessing(browser_context) -> None:
    """upscale.js against torch's two bilinear resizes (Sam.postprocess_masks), thresholded,
    for images smaller and larger than the frame, extreme aspect ratios and 1 x 1."""
    page = static_module_page(browser_context, "up")
    generator = torch.Generator().manual_seed(5)
    for height, width, blobs in [
        (389, 517, 6), (1100, 1600, 12), (4000, 6000, 3), (10000, 300, 8), (1, 1, 4),
        (7, 3000, 10), (900, 380, 2),
    ]:  # fmt: skip
        coarse = torch.randn((1, 1, blobs, blobs), generator=generator) * 6
        logits = nnf.interpolate(coarse, (256, 256), mode="bicubic", align_corners=False) - 1
        if height == 4000:  # one small object: only its neighbourhood is computed
            logits = torch.full((1, 1, 256, 256), -5.0)
            logits[..., 100:104, 30:37] = 3.0
        input_size = ResizeLongestSide.get_preprocess_shape(height, width, 1024)
        frame = nnf.interpolate(logits, (1024, 1024), mode="bilinear", align_corners=False)
        cropped = frame[..., : input_size[0], : input_size[1]]
        expected = nnf.interpolate(cropped, (height, width), mode="bilinear", align_corners=False)
        expected_mask = (expected[0, 0] > 0).numpy()
        packed = page.evaluate(
            """async ([logits, inputSize, originalSize]) => {
                const up = await import('/static/annotation/tool/upscale.js');
                const mask = new up.MaskUpscaler(inputSize, originalSize)
                    .mask(Float32Array.from(logits));
                const bits = new Uint8Array(Math.ceil(mask.length / 8)); // as numpy.packbits
                for (let i = 0; i < mask.length; i++) if (mask[i]) bits[i >> 3] |= 128 >> (i & 7);
                let text = '';
                for (let i = 0; i < bits.length; i += 0x8000) {
                    text += String.fromCharCode(...bits.subarray(i, i + 0x8000));
                }
                return btoa(text);
            }""",
            [logits.flatten().tolist(), list(input_size), [height, width]],
        )
        bits = np.unpackbits(np.frombuffer(base64.b64decode(packed), np.uint8))
        mask = bits[: height * width].reshape(height, width).astype(bool)
        differing = int((mask != expected_mask).sum())
        # Float rounding may flip a pixel whose logit is ~0; nothing more.
        assert differing <= max(2, expected_mask.size * 1e-6), (height, width, differing)
        assert mask.sum() == pytest.approx(expected_mask.sum(), abs=2)
        if height == 4000:
            assert 0 < mask.sum() < 0.001 * mask.size
