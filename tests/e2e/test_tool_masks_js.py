"""masks.js's bounding box and area (on the click path of every new mask) against numpy, in the
browser: they skip empty space four pixels at a time, so sizes that are not a multiple of 4 and
masks that start at an unaligned byte offset are the cases to get right. And render.js's frame
while an image is still loading."""

import base64

import numpy as np

from tests.e2e.conftest import static_module_page


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
    # The pixels as base64 bytes: a JSON list of 1.5 M numbers took Playwright half a minute.
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
        """async (cases) => {
            const masks = await import('/static/annotation/tool/masks.js');
            return cases.map((c) => {
                const raw = atob(c.b64);
                const bits = new Uint8Array(raw.length);
                for (let i = 0; i < raw.length; i += 1) bits[i] = raw.charCodeAt(i);
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
