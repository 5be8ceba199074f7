"""Reading images and label maps, writing PNGs atomically.

Every reader turns any decoding failure (missing file, truncated data, garbage bytes, an
unexpected pixel format) into a :class:`~iccld.errors.DataError` whose one-line message is
``"<path>: cannot read image (<reason>)"``; no other exception type escapes.

Label formats handled by :func:`read_label`:

- 8-bit grayscale (Cityscapes ``*_labelIds.png``, every ``*_labelTrainIds.png``): the values.
- Palette PNGs (GTA5 ``labels/*.png``): the palette *indices*, which are the class ids; the image
  is never converted to RGB.
- 16-bit grayscale: the 16-bit values.
- 16-bit RGB(A) (SYNTHIA ``GT/LABELS/*.png``): the first channel, with its full 16 bits. Pillow
  opens such files as 8-bit RGB keeping only the high byte of each sample, so the file is decoded
  twice, once for the high and once for the low bytes (see :func:`_read_png16_first_channel`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from ..utils import atomic_write_bytes

# Pillow rawmodes that keep only the high byte of 16-bit samples -> the same layout read as
# little-endian, which picks the other (low) byte of each big-endian PNG sample.
_LOW_BYTE_RAWMODE = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def _fail(path: Path | str, reason: object) -> DataError:
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return DataError(f"{path}: cannot read image ({text})")


# 16-bit grayscale as Pillow opens it (PNG: I;16 or I; TIFF: I;16*). Pillow's convert("RGB") clips
# these at 255, so every pixel above 255 of 65535 would come out white.
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I")


def _gray16_to_rgb8(values: np.ndarray) -> np.ndarray:
    """(H, W) 16-bit values -> (H, W, 3) uint8, scaled 0..65535 -> 0..255 (the high byte, rounded)."""
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError("pixel values outside 0..65535 in a 32-bit integer image")
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


# the largest image read (pixels): Pillow's own decompression-bomb threshold, checked from the header
# before decoding so that a huge image is one clear line instead of a warning and an allocator error
MAX_PIXELS = 89_478_485


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB, shape (H, W, 3), upright: an EXIF orientation (phone photos) is
    applied, so the pixels are what a viewer shows. 16-bit grayscale is scaled to 8 bits (16-bit RGB
    PNGs are read by Pillow as their high bytes). Any failure -> DataError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise DataError(f"{path}: {w}x{h} pixels is too large to read ({w * h / 1e6:.0f} megapixels; "
                                f"iccld reads up to {MAX_PIXELS / 1e6:.0f}); resize it first")
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in _WIDE_GRAY:
                array = _gray16_to_rgb8(np.asarray(im))
            elif im.mode == "F":
                raise ValueError("a 32-bit float image; save it as 8- or 16-bit")
            else:
                array = np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data (OSError, SyntaxError, ...)
        raise _fail(path, exc) from None
    if array.ndim != 3 or array.shape[2] != 3:
        raise _fail(path, f"decoded to shape {array.shape}, expected (H, W, 3)")
    return array


def _read_png16_first_channel(path: str | Path, im: Image.Image) -> np.ndarray:
    """First channel of a 16-bit RGB(A) PNG with all 16 bits, shape (H, W), uint16.

    ``im`` was opened (not loaded) by Pillow, whose decoder keeps the high byte of each sample.
    Decoding a second time with the little-endian rawmode gives the low bytes; the PNG filters are
    undone correctly both times because both rawmodes have the same 48/64 bits per pixel.
    """
    tile = im.tile
    if len(tile) != 1 or tile[0][0] != "zip":
        raise ValueError(f"unexpected PNG layout {tile!r}")
    args = tile[0][3]
    rawmode = args if isinstance(args, str) else args[0]
    low_rawmode = _LOW_BYTE_RAWMODE[rawmode]
    im.load()
    high = np.asarray(im)[:, :, 0].astype(np.uint16)
    with Image.open(path) as im_low:
        low_args = low_rawmode if isinstance(args, str) else (low_rawmode, *args[1:])
        first = im_low.tile[0]  # a named tuple since Pillow 11, a plain tuple before
        im_low.tile = [first._replace(args=low_args) if hasattr(first, "_replace")
                       else (first[0], first[1], first[2], low_args)]
        im_low.load()
        low = np.asarray(im_low)[:, :, 0].astype(np.uint16)
    return (high << 8) | low


def read_label(path: str | Path) -> np.ndarray:
    """Read a label map as a (H, W) integer array (uint8, or uint16 for 16-bit files).

    See the module docstring for the formats. An 8-bit colour image is refused: colour-coded labels
    are read with :func:`read_image` by a folder dataset whose spec says ``encoding: rgb``.
    """
    try:
        with Image.open(path) as im:
            if im.format == "PNG" and im.tile and _tile_rawmode(im) in _LOW_BYTE_RAWMODE:
                return _read_png16_first_channel(path, im)
            im.load()
            if im.mode in ("L", "P"):
                array = np.asarray(im, dtype=np.uint8)  # P: the palette indices, not colours
            elif im.mode in ("I;16", "I;16B", "I;16L"):
                array = np.asarray(im).astype(np.uint16)
            elif im.mode == "I":
                array = np.asarray(im)
                if array.size and (array.min() < 0 or array.max() > 65535):
                    raise ValueError("label values outside 0..65535")
                array = array.astype(np.uint16)
            else:
                raise ValueError(f"a label map must be single-channel, palette or 16-bit RGB; "
                                 f"got mode {im.mode} (colour-coded labels need a folder spec "
                                 f"with encoding: rgb)")
    except DataError:
        raise
    except Exception as exc:
        raise _fail(path, exc) from None
    if array.ndim != 2:
        raise _fail(path, f"decoded to shape {array.shape}, expected (H, W)")
    return array


def _tile_rawmode(im: Image.Image) -> str:
    args = im.tile[0][3]
    return args if isinstance(args, str) else (args[0] if args else "")


def image_size(path: str | Path) -> tuple[int, int]:
    """(W, H) as :func:`read_image` returns it (EXIF rotations of 90 degrees swap the two), from the
    file header without decoding the pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)  # 5..8: a quarter turn
            return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    except Exception as exc:
        raise _fail(path, exc) from None


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a (H, W) uint8/uint16 or (H, W, 3) uint8 array."""
    array = np.ascontiguousarray(array)
    ok_uint16 = array.ndim == 2 and array.dtype == np.uint16
    ok_uint8 = array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3))
    if not (ok_uint16 or ok_uint8):
        raise ValueError(f"cannot write an array of shape {array.shape} and dtype {array.dtype} as PNG")
    im = Image.fromarray(array)  # L, I;16 or RGB from the dtype and shape
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def write_png(path: str | Path, array: np.ndarray, compress_level: int = 1) -> None:
    """Write ``array`` as a PNG atomically (temporary file in the same folder, then a rename).

    (H, W) uint8 -> 8-bit grayscale, (H, W) uint16 -> 16-bit grayscale, (H, W, 3) uint8 -> RGB.
    ``compress_level`` 1 is fast and about as small as the default for label maps.
    """
    atomic_write_bytes(Path(path), encode_png(array, compress_level))
