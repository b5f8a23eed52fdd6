"""Files people send, made in the test (nothing downloaded): a phone's photo that says where it
was taken, a small PNG, a one-page PDF, and a web page dressed up as a photo."""

from __future__ import annotations

import io

from PIL import Image

GPS_IFD = 0x8825  # EXIF's GPS block: where a photo was taken
MAKE = 0x010F


def photo(*, size: tuple[int, int] = (800, 600), fmt: str = "JPEG") -> bytes:
    """A camera's photo: EXIF with the camera's make and where it was taken."""
    exif = Image.Exif()
    exif[MAKE] = "PhoneMaker"
    exif[GPS_IFD] = {1: "N", 2: (31.0, 14.0, 10.0), 3: "E", 4: (121.0, 28.0, 30.0)}
    out = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(out, fmt, exif=exif)
    return out.getvalue()


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (0, 128, 255)).save(out, "PNG")
    return out.getvalue()


def pdf() -> bytes:
    """A one-page PDF with its cross-reference table (offsets counted as it is written)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    table = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1))
    out.write(b"startxref\n%d\n%%%%EOF\n" % table)
    return out.getvalue()


# A web page saved under a photo's name: what a file is comes from its bytes, never its name.
WEB_PAGE = b"<!doctype html><html><body><script>alert(1)</script></body></html>\n"
