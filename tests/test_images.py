"""Reading user images: every odd or broken input gives an RGB image or a clear ImageError, never a crash."""

import io

import numpy as np
import pytest
from PIL import Image

from zsc_core.images import MAX_PIXELS, WORK_SIDE, ImageError, load_image


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(w=64, h=48) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    a[..., 1] = 128
    return Image.fromarray(a)


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "I;16", "I", "F", "1"])
def test_odd_modes_become_rgb(mode):
    src = _photo().convert(mode) if mode not in ("I;16",) else Image.fromarray(
        (np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16), "I;16")
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I", "F") else "PNG"
    im = load_image(_bytes(src, fmt))
    assert im.mode == "RGB" and im.size == (64, 48)


def test_sixteen_bit_keeps_its_range():
    a = np.tile(np.linspace(1000, 60000, 64, dtype=np.uint16), (8, 1))
    im = load_image(_bytes(Image.fromarray(a, "I;16"), "PNG"))
    px = np.asarray(im)[..., 0]
    assert px.min() == 0 and px.max() == 255  # scaled by range, not clipped to white


def test_transparency_goes_over_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(_bytes(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    px = load_image(buf.getvalue()).getpixel((4, 4))
    assert px[0] > 200 and px[2] < 50


def test_exif_rotation_is_applied():
    im = _photo(60, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = load_image(_bytes(im, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 60)


def test_tiny_and_huge_images(tmp_path):
    assert load_image(_bytes(Image.new("RGB", (1, 1), (3, 4, 5)), "PNG")).size == (1, 1)
    big = Image.new("RGB", (10000, 10000), (10, 200, 30))
    p = tmp_path / "big.png"
    big.save(p, compress_level=1)
    del big
    out = load_image(str(p))
    assert max(out.size) == WORK_SIDE and out.getpixel((5, 5)) == (10, 200, 30)


def test_decompression_bomb_is_refused():
    # A PNG header that claims 100,000 x 100,000 pixels with almost no data.
    png = _bytes(Image.new("L", (1, 1)), "PNG")
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = png[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]
    with pytest.raises(ImageError, match="too large"):
        load_image(bomb)
    assert MAX_PIXELS < 100_000 ** 2


@pytest.mark.parametrize("payload,needle", [
    (b"", "empty"),
    (b"%PDF-1.4 definitely not an image", "not an image"),
    (b"GIF89a\x01\x00", "not an image|damaged"),
])
def test_broken_bytes(payload, needle):
    with pytest.raises(ImageError, match=needle):
        load_image(payload)


def test_truncated_and_corrupt_files(tmp_path):
    data = _bytes(_photo(256, 256), "JPEG", quality=90)
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(str(p))
    q = tmp_path / "corrupt.png"
    png = bytearray(_bytes(_photo(), "PNG"))
    png[60:80] = b"\x00" * 20
    q.write_bytes(bytes(png))
    with pytest.raises(ImageError):
        load_image(str(q))


def test_missing_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(str(tmp_path / "nope.png"))
    with pytest.raises(ImageError, match="folder"):
        load_image(str(tmp_path))
    renamed = tmp_path / "notes.jpg"
    renamed.write_text("hello, I am text")
    with pytest.raises(ImageError, match="not an image"):
        load_image(str(renamed))
