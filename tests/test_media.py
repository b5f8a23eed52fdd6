"""What an uploaded file is (media/inspect.py): the kind from the bytes alone, photos written anew
(upright, without EXIF or GPS), decompression bombs refused from the header, limits per kind as
413, anything else 415, videos measured. Pure and fast: every file is made here."""

from __future__ import annotations

import inspect
import io
import resource
import struct
from typing import Any

import av
import pytest
from PIL import ExifTags, Image, ImageChops, ImageCms, PngImagePlugin
from pymediainfo import MediaInfo

from domain.policy import Attachments
from media.inspect import THUMBNAIL_SIDE, Inspected, Refused, inspect_upload
from tests.support.media import (
    LATITUDE,
    RED,
    WHITE,
    animated,
    audio_only_mp4,
    marked_photo,
    pdf,
    phone_exif,
    photo,
    png_claiming,
    turned_quarter,
    video,
    with_position,
)

LIMITS = Attachments()


def refusal(data: bytes, limits: Attachments = LIMITS) -> Refused:
    with pytest.raises(Refused) as refused:
        inspect_upload(data, limits)
    return refused.value


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def close_to(color: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    """Equal but for what JPEG's compression moves a colour by."""
    return all(abs(got - want) <= 24 for got, want in zip(color, wanted, strict=True))


def test_only_the_bytes_reach_the_inspection() -> None:
    """A PNG named report.pdf is an image: no name or declared type is even passed."""
    assert list(inspect.signature(inspect_upload).parameters) == ["data", "limits"]
    result = inspect_upload(photo("PNG"), LIMITS)
    assert (result.kind, result.content_type, result.extension) == ("image", "image/png", ".png")
    assert (result.width, result.height, result.duration) == (64, 48, None)


@pytest.mark.parametrize(
    ("pillow_format", "content_type", "extension"),
    [
        ("JPEG", "image/jpeg", ".jpg"),
        ("PNG", "image/png", ".png"),
        ("WEBP", "image/webp", ".webp"),
        ("GIF", "image/gif", ".gif"),
    ],
)
def test_each_kind_of_photo_is_stored_in_its_own_format(
    pillow_format: str, content_type: str, extension: str
) -> None:
    result = inspect_upload(photo(pillow_format, (300, 200)), LIMITS)
    assert (result.kind, result.content_type, result.extension) == (
        "image",
        content_type,
        extension,
    )
    assert opened(result.data).format == pillow_format
    assert (result.width, result.height) == (300, 200)
    assert result.size == len(result.data)


@pytest.mark.parametrize(
    ("upload", "what"),
    [
        (
            b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>",
            "html",
        ),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "svg"),
        (b"Just some text a visitor pasted\n", "text"),
        (b"PK\x03\x04" + bytes(100), "zip"),
        (b"\x7fELF\x02\x01\x01" + bytes(100), "program"),
        (photo("BMP"), "a photo kind we do not take"),
        (photo("TIFF"), "another photo kind we do not take"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_anything_else_is_refused_as_415(upload: bytes, what: str) -> None:
    refused = refusal(upload)
    assert refused.status == 415, what
    assert refused.reason == (
        "This kind of file is not accepted: send photos (JPEG, PNG, WebP, GIF or HEIC), "
        "videos (MP4 or WebM) or PDF documents."
    )


def test_html_that_starts_like_a_photo_is_still_refused() -> None:
    """A JPEG's first bytes, then a page: decoding it as a photo fails, so it is refused."""
    refused = refusal(b"\xff\xd8\xff\xe0" + b"<html><script>alert(1)</script></html>" * 10)
    assert (refused.status, refused.reason) == (
        415,
        "The photo could not be read: it may be damaged.",
    )


def test_an_empty_file_is_refused() -> None:
    assert (refusal(b"").status, refusal(b"").reason) == (415, "The file is empty.")


def test_a_kind_the_policy_does_not_allow_is_refused_as_415() -> None:
    photos_only = Attachments(allowed=["image"])
    for upload in (pdf(), video("mp4")):
        refused = refusal(upload, photos_only)
        assert refused.status == 415
        assert refused.reason.endswith("not accepted: send photos (JPEG, PNG, WebP, GIF or HEIC).")
    assert inspect_upload(photo("PNG"), photos_only).kind == "image"
    nothing = refusal(photo("PNG"), Attachments(allowed=[]))
    assert (nothing.status, nothing.reason) == (
        415,
        "Photos are not accepted: no attachments are taken here.",
    )


@pytest.mark.parametrize(
    ("limits", "upload", "reason"),
    [
        (Attachments(max_image_bytes=100), photo("PNG", (100, 100)), "photo"),
        (Attachments(max_video_bytes=1000), video("webm"), "video"),
        (Attachments(max_file_bytes="1KiB"), pdf(), "PDF"),
    ],
    ids=["image", "video", "file"],
)
def test_each_kind_has_its_own_size_limit(limits: Attachments, upload: bytes, reason: str) -> None:
    refused = refusal(upload, limits)
    assert refused.status == 413
    assert refused.reason.startswith(f"The {reason} is too large: at most ")
    # The same file passes under the default limits: only its own kind's limit counted.
    inspect_upload(upload, LIMITS)


def test_the_size_limit_is_checked_before_anything_is_decoded() -> None:
    """A damaged photo over the limit is 413 (too large), not 415 (could not be read)."""
    damaged = photo("PNG", (100, 100))[:60] + bytes(5000)
    assert refusal(damaged).status == 415
    refused = refusal(damaged, Attachments(max_image_bytes="2KiB"))
    assert (refused.status, refused.reason) == (413, "The photo is too large: at most 2 KiB.")


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    """50,000 by 50,000 pixels (7.5 GB decoded) in a file of a few hundred bytes: refused on
    the header's pixel count. Its image data is damaged, so a decoder would have said 415."""
    bomb = png_claiming(50_000, 50_000)
    assert len(bomb) < 1000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes
    refused = refusal(bomb)
    assert (refused.status, refused.reason) == (
        413,
        "The photo is too large: at most 40 megapixels.",
    )
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000


def test_a_photo_past_the_policys_pixel_count_is_refused_before_decoding() -> None:
    """8,000 by 6,000 is below Pillow's own bomb ceiling: our limit (40 million) refuses it."""
    refused = refusal(png_claiming(8_000, 6_000))
    assert (refused.status, refused.reason) == (
        413,
        "The photo is too large: at most 40 megapixels.",
    )
    tiny = Attachments(max_image_pixels=1000)
    assert refusal(photo("JPEG", (64, 48)), tiny).status == 413
    assert inspect_upload(photo("JPEG", (40, 25)), tiny).width == 40


@pytest.mark.parametrize("pillow_format", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_a_photo_comes_back_without_its_exif_and_gps(pillow_format: str) -> None:
    upload = photo(pillow_format, (120, 80), exif=phone_exif())
    before = Image.open(io.BytesIO(upload)).getexif()
    assert before.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == LATITUDE

    result = inspect_upload(upload, LIMITS)

    stored = opened(result.data)
    assert not stored.getexif()
    assert "exif" not in stored.info
    assert b"Exif" not in result.data and b"Phone maker" not in result.data
    assert not opened(result.thumbnail or b"").getexif()
    assert b"Phone maker" not in (result.thumbnail or b"")


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>home address</rdf:RDF></x:xmpmeta>'


def _png_text() -> PngImagePlugin.PngInfo:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "third floor")
    text.add_itxt("XML:com.adobe.xmp", XMP.decode())
    return text


@pytest.mark.parametrize(
    ("pillow_format", "options"),
    [
        ("JPEG", {"comment": b"third floor", "xmp": XMP}),
        ("PNG", {"pnginfo": _png_text()}),
        ("WEBP", {"xmp": XMP}),
        ("GIF", {"comment": b"third floor"}),
    ],
)
def test_comments_and_xmp_are_dropped_too(pillow_format: str, options: dict[str, Any]) -> None:
    upload = photo(pillow_format, **options)
    assert b"third floor" in upload or b"home address" in upload
    stored = inspect_upload(upload, LIMITS).data
    assert b"third floor" not in stored and b"home address" not in stored
    assert not {"comment", "xmp", "Comment", "XML:com.adobe.xmp"} & set(opened(stored).info)


def test_the_colour_profile_is_kept() -> None:
    """A colour profile is how the photo looks (an iPhone's Display P3), not who took it."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    stored = inspect_upload(photo("JPEG", icc_profile=profile), LIMITS).data
    assert opened(stored).info.get("icc_profile") == profile


@pytest.mark.parametrize(
    ("orientation", "size", "block_at"),
    [
        # Orientation 6: the camera was held upright, the picture stored on its side; shown
        # turned a quarter clockwise, the stored top-left corner is the top-right one.
        (6, (40, 60), "top right"),
        # 8: a quarter anticlockwise, the stored top-left corner ends bottom-left.
        (8, (40, 60), "bottom left"),
        # 3: upside down.
        (3, (60, 40), "bottom right"),
        (1, (60, 40), "top left"),
    ],
)
def test_an_exif_rotated_photo_comes_back_upright(
    orientation: int, size: tuple[int, int], block_at: str
) -> None:
    result = inspect_upload(
        marked_photo((60, 40), exif=phone_exif(orientation=orientation)), LIMITS
    )
    stored = opened(result.data).convert("RGB")
    assert (result.width, result.height) == stored.size == size
    width, height = stored.size
    corners = {
        "top left": (2, 2),
        "top right": (width - 3, 2),
        "bottom left": (2, height - 3),
        "bottom right": (width - 3, height - 3),
    }
    for corner, point in corners.items():
        wanted = RED if corner == block_at else WHITE
        assert close_to(stored.getpixel(point), wanted), corner  # type: ignore[arg-type]
    assert ExifTags.Base.Orientation not in opened(result.data).getexif()


def test_a_heic_photo_is_stored_as_jpeg() -> None:
    upload = photo("HEIF", (120, 90), exif=phone_exif())
    assert Image.open(io.BytesIO(upload)).format == "HEIF"
    result = inspect_upload(upload, LIMITS)
    assert (result.kind, result.content_type, result.extension) == ("image", "image/jpeg", ".jpg")
    stored = opened(result.data)
    assert stored.format == "JPEG" and stored.size == (120, 90)
    assert close_to(stored.getpixel((60, 45)), RED)  # type: ignore[arg-type]


def test_a_damaged_heic_photo_is_refused_clearly() -> None:
    upload = photo("HEIF", (120, 90))
    refused = refusal(upload[: len(upload) // 2])
    assert (refused.status, refused.reason) == (
        415,
        "The HEIC photo could not be converted: send it as JPEG instead.",
    )


@pytest.mark.parametrize("pillow_format", ["GIF", "PNG", "WEBP"])
def test_an_animation_keeps_its_first_frame_only(pillow_format: str) -> None:
    upload = animated(pillow_format, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    assert getattr(Image.open(io.BytesIO(upload)), "n_frames", 1) == 3
    stored = opened(inspect_upload(upload, LIMITS).data)
    assert getattr(stored, "n_frames", 1) == 1
    assert close_to(stored.convert("RGB").getpixel((5, 5)), (255, 0, 0))  # type: ignore[arg-type]


def test_the_thumbnail_is_a_jpeg_at_most_320_on_its_long_side() -> None:
    wide = inspect_upload(photo("PNG", (1000, 500)), LIMITS)
    thumbnail = opened(wide.thumbnail or b"")
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE // 2)
    small = opened(inspect_upload(photo("PNG", (40, 30)), LIMITS).thumbnail or b"")
    assert small.size == (40, 30)


def test_a_transparent_png_keeps_its_transparency_and_its_thumbnail_is_on_white() -> None:
    result = inspect_upload(photo("PNG", (50, 50), (0, 0, 0, 0), mode="RGBA"), LIMITS)
    stored = opened(result.data)
    assert stored.mode == "RGBA" and stored.getpixel((10, 10))[3] == 0  # type: ignore[index]
    thumbnail = opened(result.thumbnail or b"")
    assert close_to(thumbnail.getpixel((10, 10)), WHITE)  # type: ignore[arg-type]


def test_the_stored_photo_is_the_same_picture() -> None:
    upload = photo("PNG", (64, 48), RED)
    stored = opened(inspect_upload(upload, LIMITS).data).convert("RGB")
    assert not ImageChops.difference(stored, opened(upload).convert("RGB")).getbbox()


@pytest.mark.parametrize(
    ("container", "content_type", "extension"),
    [("mp4", "video/mp4", ".mp4"), ("webm", "video/webm", ".webm")],
)
def test_a_video_gives_its_size_and_duration(
    container: str, content_type: str, extension: str
) -> None:
    upload = video(container, frames=30, rate=10, size=(96, 64))  # type: ignore[arg-type]
    result = inspect_upload(upload, LIMITS)
    assert isinstance(result, Inspected)
    assert (result.kind, result.content_type, result.extension) == (
        "video",
        content_type,
        extension,
    )
    assert (result.width, result.height) == (96, 64)
    assert result.duration == pytest.approx(3.0, abs=0.15)
    # Kept as uploaded but for an MP4's metadata, blanked in place (below).
    assert len(result.data) == len(upload) and result.thumbnail is None


def test_an_mp4_comes_back_without_the_phones_position() -> None:
    upload = with_position(video("mp4", frames=20, rate=10))
    assert MediaInfo.parse(io.BytesIO(upload)).general_tracks[0].xyz == "+48.8584+002.2945/"

    result = inspect_upload(upload, LIMITS)

    assert b"48.8584" not in result.data and len(result.data) == len(upload)
    again = MediaInfo.parse(io.BytesIO(result.data))
    assert again.general_tracks[0].xyz is None
    assert result.duration == pytest.approx(2.0, abs=0.15)
    assert float(again.general_tracks[0].duration) == pytest.approx(2000, abs=150)
    assert (again.video_tracks[0].width, again.video_tracks[0].height) == (64, 48)
    # The pictures themselves are untouched: the same frames decode from it.
    assert _frames(result.data) == _frames(video("mp4", frames=20, rate=10))


def test_an_mp4_whose_boxes_do_not_nest_is_refused() -> None:
    """A box claiming more than the file holds: its metadata could not be found for sure."""
    upload = video("mp4") + struct.pack(">I4s", 1000, b"udta")
    assert MediaInfo.parse(io.BytesIO(upload)).video_tracks
    refused = refusal(upload)
    assert (refused.status, refused.reason) == (
        415,
        "The video could not be read: send an MP4 or WebM video.",
    )


def _frames(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4)) as container:
        return sum(1 for _frame in container.decode(video=0))


def test_a_portrait_video_gives_the_size_it_shows_at() -> None:
    result = inspect_upload(turned_quarter(video("mp4", size=(96, 64))), LIMITS)
    assert (result.width, result.height) == (64, 96)


def test_a_video_without_a_picture_is_refused() -> None:
    refused = refusal(audio_only_mp4())
    assert (refused.status, refused.reason) == (
        415,
        "The video could not be read: send an MP4 or WebM video.",
    )


def test_a_damaged_video_is_refused() -> None:
    upload = video("mp4")
    refused = refusal(upload[:40] + bytes(len(upload)))
    assert refused.status == 415


def test_a_pdf_is_a_file_kept_as_it_is() -> None:
    upload = pdf()
    result = inspect_upload(upload, LIMITS)
    assert (result.kind, result.content_type, result.extension) == (
        "file",
        "application/pdf",
        ".pdf",
    )
    assert result.data == upload
    assert (result.width, result.height, result.duration, result.thumbnail) == (None,) * 4


def test_a_reason_never_repeats_the_file() -> None:
    upload = b"<html><title>Order 4711 of Ms Wang</title></html>"
    assert "4711" not in refusal(upload).reason and "Wang" not in refusal(upload).reason
