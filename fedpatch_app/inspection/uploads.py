"""Reading one uploaded image from an HTTP request, and refusing what is not one.

A camera station posts the image either as the raw body (`Content-Type: image/png` or
`image/jpeg`) or as the field `image` of a `multipart/form-data` form (what a browser
and `curl -F` send). Every way this can go wrong is an `UploadError` carrying the HTTP
status and a message for the sender, so the service answers it and carries on:

- empty body or no `image` field: 400; bytes that are no image or a truncated one: 400;
- a body above the upload limit: 413, read no further than the limit (the rest is
  drained up to a bound so the client sees the answer instead of a reset connection);
- an image above the pixel limit (a decompression bomb: a small file that decodes to
  gigabytes): 413, from the header alone, before any decoding;
- another content type, or an image format other than PNG, JPEG, BMP or TIFF: 415.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

#: Content types of a raw image body.
RAW_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
MULTIPART = "multipart/form-data"
#: The image formats the service scores, and the file suffix each is written with.
#: The formats training reads too (`data.images`), with the suffix an upload is kept under.
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
#: The largest image accepted, in pixels (AutoVI's largest images have about 5 million).
MAX_PIXELS = 40_000_000
#: An oversized body is read and dropped up to this many times the limit, then cut off.
DRAIN_FACTOR = 4


class UploadError(Exception):
    """A request the service refuses: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    """An uploaded image that passed the checks."""

    data: bytes
    format: str  # a key of FORMATS
    size: tuple[int, int]  # width, height
    filename: str = ""

    @property
    def suffix(self) -> str:
        return FORMATS[self.format]


def content_type(request: Request) -> str:
    """The media type of the request, lower case, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_content_type(request: Request) -> None:
    """415 unless the body is an image of an accepted type or a multipart form."""
    kind = content_type(request)
    if kind != MULTIPART and kind not in RAW_TYPES:
        accepted = ", ".join([*RAW_TYPES, MULTIPART])
        raise UploadError(
            415, f"content type {kind or '(none)'!r} is not accepted: send one of {accepted}"
        )


def _too_large(limit: int) -> UploadError:
    return UploadError(413, f"the upload is larger than the limit of {limit / 2**20:g} MB")


async def drain(request: Request, limit: int, already: int = 0) -> None:
    """Read and drop what is left of the body (up to DRAIN_FACTOR x `limit` in all): a
    request refused before its body was read then gets its answer, not a reset."""
    seen = already
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > DRAIN_FACTOR * limit:
            return


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most `limit` bytes; 413 above it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        if "100-continue" not in request.headers.get("expect", "").lower():
            await drain(request, limit)
        raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            await drain(request, limit, total)
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data
    yield b""


async def _form_image(request: Request, body: bytes) -> tuple[bytes, str]:
    parser = MultiPartParser(request.headers, _once(body), max_files=4, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadError(400, f"malformed multipart form: {exc.message}") from None
    try:
        field = form.get("image")
        if field is None:
            names = ", ".join(repr(k) for k in form.keys()) or "none"
            raise UploadError(400, f"the form has no field 'image' (its fields: {names})")
        if not isinstance(field, UploadFile):
            raise UploadError(400, "the form field 'image' must be a file, not text")
        return await field.read(), field.filename or ""
    finally:
        await form.close()


def check_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> tuple[str, tuple[int, int]]:
    """(format, (width, height)) of a PNG, JPEG, BMP or TIFF image; UploadError otherwise."""
    if not data:
        raise UploadError(400, "the image is empty (0 bytes): send a PNG, JPEG, BMP or TIFF image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, size = img.format or "", (int(img.width), int(img.height))
            if fmt not in FORMATS:
                raise UploadError(
                    415,
                    f"{fmt or 'this'} images are not accepted: send a PNG, JPEG, BMP or TIFF image",
                )
            if size[0] * size[1] > max_pixels:
                raise UploadError(
                    413,
                    f"the image is {size[0]}x{size[1]} pixels, above the limit of "
                    f"{max_pixels:,} pixels",
                )
            img.verify()
    except UnidentifiedImageError:
        raise UploadError(
            400,
            f"the body is not an image ({len(data)} bytes that no PNG, JPEG, BMP or TIFF reader knows)",
        ) from None
    except Image.DecompressionBombError as exc:  # Pillow's own, lower in some cases
        raise UploadError(413, f"the image has too many pixels: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(400, f"the image is truncated or corrupt: {exc}") from None
    return fmt, size


async def read_upload(request: Request, limit: int, *, max_pixels: int = MAX_PIXELS) -> Upload:
    """The image of a request (raw body or multipart field `image`), checked."""
    check_content_type(request)
    body = await read_body(request, limit)
    if not body:
        raise UploadError(400, "empty body: send a PNG, JPEG, BMP or TIFF image")
    filename = ""
    if content_type(request) == MULTIPART:
        body, filename = await _form_image(request, body)
    fmt, size = check_image(body, max_pixels=max_pixels)
    return Upload(body, fmt, size, filename)
