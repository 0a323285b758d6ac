"""The tool's pixel modules in the browser, against Python: rle.js encodes and decodes exactly as
pycocotools; masks.js's bounding box and area (on the click path of every new mask) match numpy:
they skip empty space four pixels at a time, so sizes that are not a multiple of 4 and masks
that start at an unaligned byte offset are the cases to get right. And render.js's frame while
an image is still loading.

Pixels cross between Python and the page as base64 bytes: Playwright took half a minute over a
JSON list of a million and a half numbers."""

import base64

import numpy as np
from pycocotools import mask as mask_utils

from tests.e2e.conftest import static_module_page

# Declared at the top of a page function: bytes <-> base64 text.
BASE64_JS = """
    const fromBase64 = (text) => {
        const raw = atob(text);
        const bytes = new Uint8Array(raw.length);
        for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
        return bytes;
    };
    const toBase64 = (bytes) => {
        let text = '';
        for (let i = 0; i < bytes.length; i += 8192) {
            text += String.fromCharCode(...bytes.subarray(i, i + 8192));
        }
        return btoa(text);
    };
"""


def _truth(mask: np.ndarray) -> tuple[list[int] | None, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, 0
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())], int(mask.sum())


def test_mask_box_and_area_match_numpy(browser_context) -> None:
    page = static_module_page(browser_context, "masks")
    rng = np.random.default_rng(11)
    masks = [np.zeros((7, 9), np.uint8), np.ones((3, 5), np.uint8)]
    first = np.zeros((5, 7), np.uint8)
    first[0, 0] = 1
    last = np.zeros((5, 7), np.uint8)
    last[4, 6] = 1  # the final pixel: 35 bytes, after the last whole 32-bit word
    masks += [first, last]
    for height, width, density in [(37, 53, 0.01), (64, 64, 0.3), (1, 13, 0.2), (13, 1, 0.2)]:
        masks.append((rng.random((height, width)) < density).astype(np.uint8))
    block = np.zeros((1000, 1500), np.uint8)
    block[400:520, 600:700] = 1
    block[450, 20] = 1  # a lone pixel far left of the object, inside its rows
    masks.append(block)
    offsets = (0, 1, 3)  # 0: read a 32-bit word at a time; 1, 3: byte by byte
    cases = [
        {
            "h": m.shape[0],
            "w": m.shape[1],
            "b64": base64.b64encode(m.tobytes()).decode(),
            "offset": offset,
        }
        for m in masks
        for offset in offsets
    ]
    results = page.evaluate(
        "async (cases) => {"
        + BASE64_JS
        + """
            const masks = await import('/static/annotation/tool/masks.js');
            return cases.map((c) => {
                const bits = fromBase64(c.b64);
                // The mask as a view at a byte offset of a larger buffer, as subarray() gives.
                const buffer = new Uint8Array(c.offset + bits.length + 5).fill(0);
                const mask = buffer.subarray(c.offset, c.offset + bits.length);
                mask.set(bits);
                buffer.fill(1, 0, c.offset);  // set bytes around the mask: never read
                buffer.fill(1, c.offset + bits.length);
                const box = masks.maskBox(mask, c.w, c.h);
                return { box, area: masks.maskArea(mask, c.w, box) };
            });
        }""",
        cases,
    )
    expected = [_truth(m) for m in masks for _ in offsets]
    for case, result, (box, area) in zip(cases, results, expected, strict=True):
        assert result["box"] == box, (case["h"], case["w"], case["offset"])
        assert result["area"] == area


def test_javascript_rle_codec_matches_pycocotools(browser_context) -> None:
    """rle.js encodes to pycocotools' exact strings and decodes them back, on edge cases and
    random masks (the static file is served from the checkout through a routed origin)."""
    page = static_module_page(browser_context, "rle")
    rng = np.random.default_rng(7)
    masks = [np.zeros((1, 1), np.uint8), np.ones((3, 5), np.uint8), np.zeros((40, 30), np.uint8)]
    for height, width, density in [(37, 53, 0.5), (200, 300, 0.02), (64, 64, 0.97)]:
        masks.append((rng.random((height, width)) < density).astype(np.uint8))
    big = np.zeros((1200, 900), np.uint8)
    big[100:1100, 50:850] = 1  # runs longer than 2^15 exercise the multi-group counts
    big[500:520, :] = 0
    masks.append(big)
    cases = []
    for mask in masks:
        rle = mask_utils.encode(np.asfortranarray(mask))
        cases.append(
            {"h": mask.shape[0], "w": mask.shape[1],
             "b64": base64.b64encode(mask.tobytes()).decode(), "counts": rle["counts"].decode()}
        )  # fmt: skip
    results = page.evaluate(
        "async (cases) => {"
        + BASE64_JS
        + """
            const rle = await import('/static/annotation/tool/rle.js');
            return cases.map((c) => {
                const encoded = rle.encodeMask(fromBase64(c.b64), c.h, c.w);
                const decoded = rle.decodeMask({size: [c.h, c.w], counts: c.counts});
                return {counts: encoded.counts, size: encoded.size, b64: toBase64(decoded)};
            });
        }""",
        cases,
    )
    for case, result, mask in zip(cases, results, masks, strict=True):
        assert result["counts"] == case["counts"]
        assert result["size"] == [case["h"], case["w"]]
        decoded = np.frombuffer(base64.b64decode(result["b64"]), np.uint8)
        np.testing.assert_array_equal(decoded, mask.ravel())


def test_frame_while_the_image_loads_draws_the_background_only(browser_context) -> None:
    """An image chosen but its pixels not decoded yet (a resize or a panel update asks for a
    frame meanwhile): the frame is the empty background, not an exception."""
    page = static_module_page(browser_context, "render")
    corner = page.evaluate(
        """async () => {
            const { drawFrame } = await import('/static/annotation/tool/render.js');
            const canvas = document.createElement('canvas');
            canvas.width = 40;
            canvas.height = 30;
            const tool = {
                canvas,
                view: { scale: 1, tx: 0, ty: 0 },
                image: { id: 1, width: 400, height: 300 },
                imageElement: null,
            };
            drawFrame(tool);
            return Array.from(canvas.getContext('2d').getImageData(0, 0, 1, 1).data);
        }"""
    )
    assert corner == [0x1D, 0x23, 0x30, 255]  # the tool's background colour
