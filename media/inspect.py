"""What an uploaded file is, decided by its bytes (libmagic), never by its name or declared type.

Photos are decoded and written anew (oriented, without EXIF, XMP or comments: a customer's photo
often carries their home's GPS position); videos measured, an MP4's metadata boxes blanked (a
phone writes its position there too); PDFs taken as they are. Limits come from the policy's
[attachments]; anything else is `Refused` with a sentence for the uploader. CPU-bound and
synchronous: call it from a worker thread.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import magic
import pillow_heif
from PIL import Image, ImageOps
from pymediainfo import MediaInfo

from domain.policy import AttachmentKind, AttachmentLimits

# HEIC (iPhone photos) through Pillow: read here, stored as JPEG.
pillow_heif.register_heif_opener()

THUMBNAIL_SIDE = 320
_PHOTO_QUALITY = 85
_THUMBNAIL_QUALITY = 80


@dataclass(frozen=True)
class _Photo:
    reader: str  # the one Pillow plugin allowed to open it
    writer: str  # what we store it as


@dataclass(frozen=True)
class _Stored:
    content_type: str
    extension: str


# Detected content type → how it is read and written. An animated GIF, PNG or WebP keeps its
# first frame only: every frame would need decoding and re-encoding to drop what they carry.
_PHOTOS = {
    "image/jpeg": _Photo(reader="JPEG", writer="JPEG"),
    "image/png": _Photo(reader="PNG", writer="PNG"),
    "image/apng": _Photo(reader="PNG", writer="PNG"),  # an animated PNG, named by newer libmagic
    "image/webp": _Photo(reader="WEBP", writer="WEBP"),
    "image/gif": _Photo(reader="GIF", writer="GIF"),
    "image/heic": _Photo(reader="HEIF", writer="JPEG"),
    "image/heif": _Photo(reader="HEIF", writer="JPEG"),
}
_WRITTEN = {
    "JPEG": _Stored("image/jpeg", ".jpg"),
    "PNG": _Stored("image/png", ".png"),
    "WEBP": _Stored("image/webp", ".webp"),
    "GIF": _Stored("image/gif", ".gif"),
}
# Detected content type → MediaInfo's name for the container, which must agree.
_VIDEOS = {
    "video/mp4": ("MPEG-4", _Stored("video/mp4", ".mp4")),
    "video/webm": ("WebM", _Stored("video/webm", ".webm")),
}
_FILES = {"application/pdf": _Stored("application/pdf", ".pdf")}

# An MP4's boxes that hold what the camera knew besides pictures and sound: user data (a phone's
# position as ©xyz, its model), Apple's keyed metadata (the position again), XMP (in a uuid box).
_MP4_METADATA = frozenset({b"udta", b"meta", b"uuid"})
_MP4_HOLDERS = frozenset({b"moov", b"trak"})  # looked into for those
_MOST_BOXES = 10_000  # in one box: a real file has a handful

_KIND_WORDS: dict[AttachmentKind, str] = {
    "image": "photos (JPEG, PNG, WebP, GIF or HEIC)",
    "video": "videos (MP4 or WebM)",
    "file": "PDF documents",
}
_KIND_NOUN: dict[AttachmentKind, str] = {"image": "photo", "video": "video", "file": "PDF"}

# One libmagic handle (python-magic locks it per call); only the type, never a look inside
# compressed data.
_detector = magic.Magic(mime=True)


class Refused(Exception):
    """An upload we do not take: `status` 413 (too large) or 415 (not a kind we take),
    `reason` a sentence for the uploader (never the file's name or content)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Inspected:
    kind: AttachmentKind  # file: a PDF
    content_type: str  # from our detection of the bytes (after conversion)
    data: bytes  # what we store: images re-encoded (no EXIF, oriented)
    extension: str  # ".jpg", ".png", ".webp", ".gif", ".mp4", ".webm", ".pdf"
    width: int | None = None
    height: int | None = None
    duration: float | None = None  # seconds, videos
    thumbnail: bytes | None = None  # images: a JPEG at most 320 px on its long side

    @property
    def size(self) -> int:
        return len(self.data)


def inspect_upload(data: bytes, limits: AttachmentLimits) -> Inspected:
    """What `data` is, in the form we store it; `Refused` (413/415) when we do not take it.

    The kind comes from the bytes; the size limit of that kind is checked before anything is
    decoded, and an image's pixel count is read from its header before its pixels are."""
    if not data:
        raise Refused(415, "The file is empty.")
    detected = _detector.from_buffer(data)
    kind = _kind_of(detected)
    if kind is None:
        raise Refused(415, _not_accepted("This kind of file is", limits))
    if kind not in limits.allowed:
        raise Refused(415, _not_accepted(f"{_KIND_NOUN[kind].capitalize()}s are", limits))
    if len(data) > limits.max_bytes(kind):
        raise Refused(
            413, f"The {_KIND_NOUN[kind]} is too large: at most {_size(limits.max_bytes(kind))}."
        )
    if kind == "image":
        return _photo(data, _PHOTOS[detected], limits)
    if kind == "video":
        return _video(data, *_VIDEOS[detected])
    stored = _FILES[detected]
    return Inspected(
        kind="file", content_type=stored.content_type, data=data, extension=stored.extension
    )


def _kind_of(detected: str) -> AttachmentKind | None:
    if detected in _PHOTOS:
        return "image"
    if detected in _VIDEOS:
        return "video"
    if detected in _FILES:
        return "file"
    return None


def _not_accepted(subject: str, limits: AttachmentLimits) -> str:
    wanted = [_KIND_WORDS[kind] for kind in _KIND_WORDS if kind in limits.allowed]
    if not wanted:
        return f"{subject} not accepted: no attachments are taken here."
    listed = wanted[0] if len(wanted) == 1 else f"{', '.join(wanted[:-1])} or {wanted[-1]}"
    return f"{subject} not accepted: send {listed}."


def _size(count: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{round(count / scale, 1):g} {unit}"
    return f"{count} bytes"


def _photo(data: bytes, photo: _Photo, limits: AttachmentLimits) -> Inspected:
    too_many = f"The photo is too large: at most {limits.max_image_pixels / 1e6:g} megapixels."
    try:
        # Opening reads the header only; the pixels are decoded by exif_transpose below.
        with Image.open(io.BytesIO(data), formats=[photo.reader]) as opened:
            width, height = opened.size
            if width * height > limits.max_image_pixels:
                raise Refused(413, too_many)
            upright = ImageOps.exif_transpose(opened)
            written = _written(upright, photo.writer)
            thumbnail = _thumbnail(upright)
    except Refused:
        raise
    except Image.DecompressionBombError:  # Pillow's own ceiling, far above ours
        raise Refused(413, too_many) from None
    except Exception:  # whatever a damaged or hostile file makes a decoder raise
        unreadable = (
            "The HEIC photo could not be converted: send it as JPEG instead."
            if photo.reader == "HEIF"
            else "The photo could not be read: it may be damaged."
        )
        raise Refused(415, unreadable) from None
    stored = _WRITTEN[photo.writer]
    return Inspected(
        kind="image",
        content_type=stored.content_type,
        data=written,
        extension=stored.extension,
        width=upright.width,
        height=upright.height,
        thumbnail=thumbnail,
    )


def _written(image: Image.Image, writer: str) -> bytes:
    """The pixels anew, with nothing of the file's metadata but its colour profile (and
    transparency): Pillow writes back what `info` holds (a JPEG's comment, a PNG's profile)."""
    icc_profile = image.info.get("icc_profile")
    image.info = {key: value for key, value in image.info.items() if key == "transparency"}
    options: dict[str, Any] = {}
    if writer == "JPEG":
        image = _opaque(image)
        options = {"quality": _PHOTO_QUALITY}
    elif writer == "WEBP":
        options = {"quality": _PHOTO_QUALITY}
    if icc_profile and writer != "GIF":
        options["icc_profile"] = icc_profile
    out = io.BytesIO()
    image.save(out, writer, **options)
    return out.getvalue()


def _opaque(image: Image.Image) -> Image.Image:
    """RGB or L for JPEG: transparent parts on white, other modes (CMYK, I;16) converted."""
    if image.mode in ("RGB", "L"):
        return image
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _thumbnail(image: Image.Image) -> bytes:
    small = _opaque(image)
    small = small.copy() if small is image else small
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=_THUMBNAIL_QUALITY)
    return out.getvalue()


def _video(data: bytes, container: str, stored: _Stored) -> Inspected:
    unreadable = Refused(415, "The video could not be read: send an MP4 or WebM video.")
    try:
        info = MediaInfo.parse(io.BytesIO(data))
    except RuntimeError:
        raise unreadable from None
    general = info.general_tracks[0] if info.general_tracks else None
    if general is None or general.format != container or not info.video_tracks:
        raise unreadable
    track = info.video_tracks[0]
    width, height = _number(track.width), _number(track.height)
    # A phone's portrait video is stored landscape with a rotation: give the size it shows at.
    rotation = _number(track.rotation) or 0
    if rotation % 180 == 90:
        width, height = height, width
    milliseconds = _number(general.duration) or _number(track.duration)
    if container == "MPEG-4":
        try:
            data = _mp4_without_metadata(data)
        except ValueError:
            raise unreadable from None
    return Inspected(
        kind="video",
        content_type=stored.content_type,
        data=data,
        extension=stored.extension,
        width=None if width is None else int(width),
        height=None if height is None else int(height),
        duration=None if milliseconds is None else milliseconds / 1000,
    )


def _number(value: object) -> float | None:
    """MediaInfo gives numbers as int or as text ("3000.000000"), or nothing."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _mp4_without_metadata(mp4: bytes) -> bytes:
    """The MP4 with each metadata box turned into a `free` box of zeros: every box keeps its
    size, so no offset into the media moves and the file plays as before."""
    data = bytearray(mp4)
    _blank_metadata(data, 0, len(data))
    return bytes(data)


def _blank_metadata(data: bytearray, start: int, end: int) -> None:
    at, count = start, 0
    while end - at >= 8:
        count += 1
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if end - at < 16:
                raise ValueError("a box header runs past its parent")
            (size,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif size == 0:  # up to the end of its parent
            size = end - at
        if size < header or size > end - at or count > _MOST_BOXES:
            raise ValueError("boxes that do not nest")
        if kind in _MP4_METADATA:
            data[at + 4 : at + 8] = b"free"
            data[at + header : at + size] = bytes(size - header)
        elif kind in _MP4_HOLDERS:
            _blank_metadata(data, at + header, at + size)
        at += size
