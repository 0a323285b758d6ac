"""COCO run lengths of a mask given as tiles, without building the mask.

Why this is hand-written: pycocotools' encoder takes the full H x W mask and scans every pixel
(about 1.5 ms per 1.5 Mpx candidate on our CPUs, plus building the mask in Fortran order),
while the server decoder (engine.sam.boundary_masks) knows most of each mask as whole tiles
that are all True or all False. Runs can only change inside the few boundary tiles, between
two tiles stacked in a column, or from the bottom of a column to the top of the next; this
module finds exactly those changes, so its cost follows the boundary, not the image.
pycocotools still turns the counts into its compressed string (``frPyObjects``), and the tests
compare the result with pycocotools' own encoding of the full mask, byte for byte, on many
shapes and sizes (tests/engine/test_decode_tile_rle.py).

Order and convention are COCO's: pixels column by column (Fortran order of H x W), the first
count is the number of leading False pixels (0 when the first pixel is True).
"""

import numpy as np

TILE_ROWS = 32  # tall tiles: the runs walk columns; a tile column is one 32-bit word
TILE_COLS = 16

# The lowest set bit b of a word, times this de Bruijn constant, has a distinct top 5 bits for
# every b: a table lookup gives b without unpacking the word's 32 bits.
_DE_BRUIJN = np.uint32(0x077CB531)
_BIT_OF_TOP5 = np.zeros(32, dtype=np.int64)
_BIT_OF_TOP5[((np.uint32(1) << np.arange(32, dtype=np.uint32)) * _DE_BRUIJN) >> np.uint32(27)] = (
    np.arange(32)
)


def set_bits(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K uint32 words -> (index of the word, bit number) of every set bit, one pass per bit
    of the busiest word (a boundary crosses a tile column once or twice, rarely more)."""
    owners, bits = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    words = words.astype(np.uint32)
    (index,) = np.nonzero(words)
    words = words[index]
    while len(words):
        lowest = words & (~words + np.uint32(1))
        owners.append(index)
        bits.append(_BIT_OF_TOP5[(lowest * _DE_BRUIJN) >> np.uint32(27)])
        words = words ^ lowest
        left = words != 0
        words, index = words[left], index[left]
    return np.concatenate(owners), np.concatenate(bits)


def pack_tile_columns(bits: np.ndarray) -> np.ndarray:
    """T x TILE_ROWS x TILE_COLS bool tiles -> T x TILE_COLS uint32 words, bit r = row r."""
    return pack_transposed_tiles(np.ascontiguousarray(bits.transpose(0, 2, 1)))


def pack_transposed_tiles(columns: np.ndarray) -> np.ndarray:
    """T x TILE_COLS x TILE_ROWS bool (C-contiguous) -> T x TILE_COLS uint32 words."""
    # Rows are whole octets, so packing the flat array packs each column (8x faster than
    # packbits along axis 2).
    flat = np.packbits(np.ascontiguousarray(columns).reshape(-1), bitorder="little")
    return flat.view("<u4").reshape(columns.shape[:2]).astype(np.uint32)


def unpack_tile_columns(words: np.ndarray) -> np.ndarray:
    """T x TILE_COLS uint32 words -> T x TILE_ROWS x TILE_COLS bool tiles."""
    octets = words.astype("<u4").view(np.uint8).reshape(len(words), TILE_COLS, 4)
    columns = np.unpackbits(octets, axis=2, bitorder="little").astype(bool)
    return columns.transpose(0, 2, 1)


def tile_run_counts(
    *, full: np.ndarray, boundary: np.ndarray, words: np.ndarray, height: int, width: int
) -> list[int]:
    """Run lengths of one H x W mask made of tiles.

    full: tiles_y x tiles_x bool, the tile is all True (ignored for boundary tiles);
    boundary: T x 2 int64 (tile_y, tile_x) of tiles given pixel by pixel, each at most once;
    words: T x TILE_COLS uint32, those tiles' pixels, one word per tile column with bit r for
    row r (`pack_tile_columns`; rows / columns beyond the image on the last tiles are ignored).
    """
    tiles_y, tiles_x = full.shape
    if tiles_y != -(-height // TILE_ROWS) or tiles_x != -(-width // TILE_COLS):
        raise ValueError(f"{tiles_y} x {tiles_x} tiles do not cover a {height} x {width} mask")
    tile_y, tile_x = boundary[:, 0], boundary[:, 1]
    rows_in = np.minimum(TILE_ROWS, height - np.arange(tiles_y) * TILE_ROWS)  # tiles_y
    # Rows beyond the image (on the last tile row) cleared.
    valid_rows = ((np.uint64(1) << rows_in.astype(np.uint64)) - np.uint64(1)).astype(np.uint32)
    words = words & valid_rows[tile_y][:, None]
    top = (words & 1).astype(bool)
    bottom = ((words >> (rows_in[tile_y] - 1).astype(np.uint32)[:, None]) & 1).astype(bool)

    # First and last pixel of every column segment (one tile tall), on whole tiles:
    # tiles_y x tiles_x x TILE_COLS, then cut to tiles_y x W.
    first = np.repeat(full, TILE_COLS, axis=1).reshape(tiles_y, tiles_x, TILE_COLS)
    last = first.copy()
    first[tile_y, tile_x] = top
    last[tile_y, tile_x] = bottom
    first = first.reshape(tiles_y, -1)[:, :width]
    last = last.reshape(tiles_y, -1)[:, :width]

    # Positions (in column-major order) of the pixels whose value differs from the previous.
    changes = [np.zeros(0, dtype=np.int64)]
    # Within a tile column: bit r of word ^ (word << 1), r >= 1, below the tile's last row.
    steps = (words ^ (words << 1)) & valid_rows[tile_y][:, None] & np.uint32(0xFFFFFFFE)
    columns = tile_x[:, None] * TILE_COLS + np.arange(TILE_COLS)  # T x TILE_COLS
    tile, offset = np.nonzero((steps != 0) & (columns < width))
    which, row = set_bits(steps[tile, offset])
    x = columns[tile[which], offset[which]]
    changes.append(x * height + tile_y[tile[which]] * TILE_ROWS + row)
    segment_y, segment_x = np.nonzero(first[1:] != last[:-1])  # a tile over the next one
    changes.append(segment_x * height + (segment_y + 1) * TILE_ROWS)
    (column,) = np.nonzero(first[0, 1:] != last[-1, :-1])  # a column's end, the next's top
    changes.append((column + 1) * height)
    positions = np.sort(np.concatenate(changes))
    counts = np.diff(np.concatenate(([0], positions, [height * width])))
    if first[0, 0]:
        counts = np.concatenate(([0], counts))
    return list(counts.tolist())  # plain ints for pycocotools
