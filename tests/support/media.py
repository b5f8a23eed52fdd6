"""Files as visitors upload them, made in the test: photos (with a phone's GPS position in their
EXIF), a PNG whose header claims more pixels than any decoder should try, real MP4 and WebM
videos (PyAV's encoders), a PDF. Nothing downloaded, nothing stored in the repository."""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction
from typing import Any, Literal

import av
import pillow_heif
from PIL import ExifTags, Image

# Pillow writes HEIC through the plugin, as an iPhone would hand it over.
pillow_heif.register_heif_opener()

RED = (220, 20, 20)
WHITE = (255, 255, 255)
# The Eiffel tower, as a phone writes it into a photo's EXIF.
LATITUDE = (48.0, 51.0, 29.0)
LONGITUDE = (2.0, 17.0, 40.0)


def phone_exif(*, orientation: int = 1) -> Image.Exif:
    """EXIF as a phone camera writes it: maker, time, orientation and the GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Phone maker"
    exif[ExifTags.Base.Model] = "Phone 15"
    exif[ExifTags.Base.DateTime] = "2026:11:01 09:30:00"
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: LATITUDE,
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: LONGITUDE,
    }
    return exif


def photo(
    pillow_format: str,
    size: tuple[int, int] = (64, 48),
    color: tuple[int, ...] = RED,
    *,
    mode: str = "RGB",
    **save_options: Any,
) -> bytes:
    """A one-colour picture in `pillow_format` (JPEG, PNG, WEBP, GIF, HEIF, PDF, BMP …)."""
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, pillow_format, **save_options)
    return out.getvalue()


def marked_photo(size: tuple[int, int], **save_options: Any) -> bytes:
    """A white JPEG with a red block in its stored top-left corner: where the block shows
    tells which way the picture was turned."""
    image = Image.new("RGB", size, WHITE)
    image.paste(RED, (0, 0, size[0] // 3, size[1] // 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, **save_options)
    return out.getvalue()


def animated(
    pillow_format: str, colors: list[tuple[int, int, int]], size: tuple[int, int] = (32, 32)
) -> bytes:
    """A GIF, PNG or WEBP of one frame per colour."""
    frames = [Image.new("RGB", size, color) for color in colors]
    out = io.BytesIO()
    frames[0].save(
        out, pillow_format, save_all=True, append_images=frames[1:], duration=100, loop=0
    )
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` by `height` pixels, followed by a few bytes of image
    data: decoding it would need the claimed size in memory, refusing it only the header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    first_rows = zlib.compress(bytes(1 + 3 * min(width, 4096)) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", first_rows)
        + chunk(b"IEND", b"")
    )


def video(
    container: Literal["mp4", "webm"],
    *,
    frames: int = 30,
    rate: int = 10,
    size: tuple[int, int] = (64, 48),
) -> bytes:
    """A real video of `frames` / `rate` seconds, encoded by the ffmpeg inside PyAV."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream("libx264" if container == "mp4" else "libvpx", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for number in range(frames):
            picture = Image.new("RGB", size, (number * 8 % 256, 40, 40))
            muxer.mux(stream.encode(av.VideoFrame.from_image(picture)))
        muxer.mux(stream.encode(None))
    return out.getvalue()


def turned_quarter(mp4: bytes) -> bytes:
    """The MP4 with its track's display matrix turned a quarter: a phone's portrait video,
    stored landscape (the matrix in `tkhd`, written here by hand)."""
    data = bytearray(mp4)
    at = data.find(b"tkhd")
    version = data[at + 4]
    # After the box type: version and flags, times, track id and duration, reserved, layer,
    # group, volume: 40 bytes in version 0, 52 in version 1.
    matrix = at + 4 + (52 if version == 1 else 40)
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    return bytes(data)


def with_position(mp4: bytes, position: bytes = b"+48.8584+002.2945/") -> bytes:
    """The MP4 (its moov box last, as PyAV writes it) with the GPS position a phone writes:
    moov/udta/©xyz, ISO 6709. Growing the last box moves no offset into the media."""

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    data = bytearray(mp4)
    moov = data.rfind(b"moov") - 4
    (size,) = struct.unpack_from(">I", data, moov)
    assert moov + size == len(data), "moov must be the last box"
    language = 0x15C7  # "eng", packed
    user_data = box(
        b"udta", box(b"\xa9xyz", struct.pack(">HH", len(position), language) + position)
    )
    struct.pack_into(">I", data, moov, size + len(user_data))
    return bytes(data + user_data)


def audio_only_mp4(seconds: int = 1) -> bytes:
    """An MP4 (its header says video) that holds sound and no picture."""
    rate, samples = 8000, 1024
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as muxer:
        stream = muxer.add_stream("aac", rate=rate, layout="mono")
        for number in range(seconds * rate // samples):
            frame = av.AudioFrame(format="fltp", layout="mono", samples=samples)
            frame.planes[0].update(bytes(4 * samples))
            frame.sample_rate = rate
            frame.pts = number * samples
            frame.time_base = Fraction(1, rate)
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))
    return out.getvalue()


def pdf() -> bytes:
    return photo("PDF", (200, 100), WHITE)
