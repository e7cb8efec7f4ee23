"""Reading one uploaded image from an HTTP request, and refusing what is not one.

A camera station posts the image either as the raw body (`Content-Type: image/png` or
`image/jpeg`) or as the one file field `image` of a `multipart/form-data` form (what a
browser and `curl -F` send). The body is streamed to a file in the service's spool folder
as it arrives, whether or not a Content-Length is sent: an upload in flight holds a few
chunks in memory (a multipart part at most `UploadLimits.spool_bytes` before it spills to
disk), never the whole body. Every way this can go wrong is an `UploadError` carrying the
HTTP status and a message for the sender, so the service answers it and carries on:

- empty body, no `image` field, a second file, a text field or a header line over the
  form limits, a file name over `MAX_FILENAME` characters, bytes that are no image or a
  truncated one: 400;
- a body that stops arriving for `chunk_seconds`, or takes longer than `body_seconds`
  in all: 408;
- a body above the upload limit: 413, read no further than the limit;
- an image outside the size rule of `image_limits` (far from the category's native size
  or aspect ratio, decompression bombs included): 413 for too many pixels, 422 for the
  aspect ratio, from the header alone, before any decoding;
- another content type, or an image format other than PNG, JPEG, BMP or TIFF: 415.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from fedpatch_app.data.images import FORMAT_SUFFIXES, IMAGE_FORMATS, shown_size
from fedpatch_app.inspection.image_limits import ImageSizeError, check_image_size

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
#: The longest file name a form may give its image (echoed back in the answer).
MAX_FILENAME = 255
#: The form's limits: one file, a few small text fields.
FORM_FILES, FORM_FIELDS, FORM_FIELD_BYTES = 1, 8, 64 * 1024


class UploadError(Exception):
    """A request the service refuses: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadLimits:
    """How much one upload may cost: bytes, time, and memory before spilling to disk."""

    max_bytes: int = 20 * 2**20
    chunk_seconds: float = 10.0
    body_seconds: float = 60.0
    spool_bytes: int = 256 * 1024


@dataclass
class Upload:
    """An uploaded image that passed the checks, in a file of the spool folder."""

    path: Path
    format: str  # one of data.images.IMAGE_FORMATS
    size: tuple[int, int]  # width, height
    filename: str = ""

    @property
    def suffix(self) -> str:
        return FORMAT_SUFFIXES[self.format]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


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


def declared_too_large(request: Request, limits: UploadLimits) -> bool:
    """Whether the request's Content-Length is above the upload limit."""
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limits.max_bytes


async def body_chunks(request: Request, limits: UploadLimits) -> AsyncIterator[bytes]:
    """The body chunk by chunk: 413 past `max_bytes`, 408 when a chunk takes longer than
    `chunk_seconds` or the whole body longer than `body_seconds`."""
    if declared_too_large(request, limits):
        raise _too_large(limits.max_bytes)
    deadline = time.monotonic() + limits.body_seconds
    stream = request.stream().__aiter__()
    total = 0
    while True:
        wait = min(limits.chunk_seconds, deadline - time.monotonic())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(wait, 0.001))
        except StopAsyncIteration:
            return
        except ClientDisconnect:
            raise UploadError(400, "the client closed the connection during the upload") from None
        except TimeoutError:
            raise UploadError(
                408,
                f"the upload stalled: no data for {limits.chunk_seconds:g} s or not complete "
                f"after {limits.body_seconds:g} s",
            ) from None
        total += len(chunk)
        if total > limits.max_bytes:
            raise _too_large(limits.max_bytes)
        if chunk:
            yield chunk


async def drain(request: Request, limits: UploadLimits, seconds: float = 2.0) -> None:
    """Read and drop what is left of a refused request's body (up to the upload limit, for
    at most `seconds`), so that the client gets the answer rather than a reset; never
    raises."""
    short = UploadLimits(limits.max_bytes, min(seconds, limits.chunk_seconds), seconds)
    try:
        async for _ in body_chunks(request, short):
            pass
    except Exception:  # noqa: BLE001 - whatever happens, the answer goes out
        return


async def _write_raw(request: Request, limits: UploadLimits, path: Path) -> None:
    with path.open("wb") as out:
        async for chunk in body_chunks(request, limits):
            out.write(chunk)


async def _write_form_image(request: Request, limits: UploadLimits, path: Path) -> str:
    """The form's field `image` written to `path`; its file name."""
    parser = MultiPartParser(
        request.headers,
        body_chunks(request, limits),
        max_files=FORM_FILES,
        max_fields=FORM_FIELDS,
        max_part_size=FORM_FIELD_BYTES,
    )
    parser.spool_max_size = limits.spool_bytes
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadError(
            400, f"malformed multipart form: {exc.message} (send one file, in the field 'image')"
        ) from None
    except FormParserError as exc:
        raise UploadError(400, f"malformed multipart form: {exc}") from None
    try:
        field = form.get("image")
        if field is None:
            names = ", ".join(repr(k[:40]) for k in form.keys()) or "none"
            raise UploadError(400, f"the form has no field 'image' (its fields: {names})")
        if not isinstance(field, UploadFile):
            raise UploadError(400, "the form field 'image' must be a file, not text")
        name = field.filename or ""
        if len(name) > MAX_FILENAME:
            raise UploadError(
                400, f"the file name has {len(name)} characters, above {MAX_FILENAME}"
            )
        with path.open("wb") as out:
            shutil.copyfileobj(field.file, out, 1 << 20)
        return name
    finally:
        await form.close()


def check_image(path: Path, native: tuple[int, int]) -> tuple[str, tuple[int, int]]:
    """(format, (width, height)) of a PNG, JPEG, BMP or TIFF image within the size rule for a
    category of `native` size; UploadError otherwise. Nothing is decoded."""
    if path.stat().st_size == 0:
        raise UploadError(400, "the image is empty (0 bytes): send a PNG, JPEG, BMP or TIFF image")
    try:
        with Image.open(path) as img:
            fmt, size = img.format or "", shown_size(img)
            if fmt not in IMAGE_FORMATS:
                raise UploadError(
                    415,
                    f"{fmt or 'this'} images are not accepted: send a PNG, JPEG, BMP or TIFF image",
                )
            check_image_size(size, native)
            img.verify()
    except ImageSizeError as exc:
        raise UploadError(413 if exc.limit == "pixels" else 422, exc.message) from None
    except UnidentifiedImageError:
        raise UploadError(
            400,
            f"the body is not an image ({path.stat().st_size} bytes that no PNG, JPEG, "
            "BMP or TIFF reader knows)",
        ) from None
    except Image.DecompressionBombError as exc:  # Pillow's own, lower in some cases
        raise UploadError(413, f"the image has too many pixels: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(400, f"the image is truncated or corrupt: {exc}") from None
    return fmt, size


async def read_upload(
    request: Request, native: tuple[int, int], limits: UploadLimits, spool: Path
) -> Upload:
    """The image of a request (raw body or multipart field `image`), streamed to a file
    in `spool` and checked for a category of `native` size."""
    check_content_type(request)
    fd, name = tempfile.mkstemp(dir=spool, prefix="upload-")
    os.close(fd)
    path = Path(name)
    try:
        filename = ""
        if content_type(request) == MULTIPART:
            filename = await _write_form_image(request, limits, path)
        else:
            await _write_raw(request, limits, path)
            if path.stat().st_size == 0:
                raise UploadError(400, "empty body: send a PNG, JPEG, BMP or TIFF image")
        fmt, size = check_image(path, native)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Upload(path, fmt, size, filename)
