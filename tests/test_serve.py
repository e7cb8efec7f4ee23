"""`fedpatch serve`: the real service on 127.0.0.1, real HTTP. Every route answers, every
bad input gets a clear JSON error and the next good request is still served, and
concurrent clients get exactly the scores of `fedpatch predict`."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from service_utils import REPO, Service, scoring_env

pytestmark = [pytest.mark.service, pytest.mark.slow]

CAT = "pipe_clip"


@pytest.fixture(scope="module")
def images(tiny_root: Path) -> list[Path]:
    """Ten images of the category: its eight test images and two good train images."""
    test = sorted((tiny_root / CAT / "test").rglob("*.png"))
    train = sorted((tiny_root / CAT / "train").rglob("*.png"))[:2]
    assert len(test) + len(train) == 10
    return test + train


@pytest.fixture(scope="module")
def predicted(pipe_clip_run: Path, images: list[Path], tmp_path_factory) -> dict[str, dict]:
    """`fedpatch predict --batch-size 1` on the same images, in a process of its own like
    the service (one image per backbone batch, as the service scores them)."""
    out = tmp_path_factory.mktemp("reference") / "pred"
    command = [sys.executable, "-m", "fedpatch_app.cli", "predict"]
    command += ["--model", str(pipe_clip_run / "model"), "--category", CAT, "--out", str(out)]
    command += ["--device", "cpu", "--batch-size", "1", *map(str, images)]
    subprocess.run(command, cwd=REPO, env=scoring_env(), check=True, capture_output=True)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {r["path"]: r for r in records}


def _post(service: Service, image: Path, *, client: httpx.Client | None = None, **params):
    send = client or httpx
    return send.post(
        f"{service.url}/v1/predict/{CAT}",
        content=image.read_bytes(),
        headers={"Content-Type": "image/png", **service.auth()},
        params=params,
        timeout=120,
    )


def test_probes_model_docs_and_page(service: Service, pipe_clip_run: Path) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    # Without the token, readiness only: no category, no fingerprint.
    assert httpx.get(f"{service.url}/readyz").json() == {"status": "ready"}
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(f"{service.url}/readyz", headers=wrong).json() == {"status": "ready"}
    ready = httpx.get(f"{service.url}/readyz", headers=service.auth()).json()
    manifest_file = pipe_clip_run / "model" / "model.json"
    manifest = json.loads(manifest_file.read_text())
    assert ready["model"] == manifest["fingerprint"] and ready["categories"] == [CAT]
    assert ready["model_sha256"] == hashlib.sha256(manifest_file.read_bytes()).hexdigest()
    assert ready["scoring"] == {"slots": 1, "queue": 8, "in_flight": 0}
    model = httpx.get(f"{service.url}/v1/model", headers=service.auth())
    assert model.status_code == 200 and model.json() == manifest
    trained = model.json()["provenance"]["training_data"]
    assert trained["synthetic"] is True and "AutoVI" not in trained["dataset"]
    assert trained["generator"] == {"kind": "drawn", "scale": "tiny", "seed": 0}
    entry = trained["categories"][CAT]
    assert entry["layout"] == "autovi" and entry["train_images"] + entry["calibration_images"] == 8
    schema = httpx.get(f"{service.url}/openapi.json").json()
    assert "/v1/predict/{category}" in schema["paths"] and "/v1/model" in schema["paths"]
    assert "swagger" in httpx.get(f"{service.url}/docs").text.lower()
    page = httpx.get(f"{service.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/review.js" in page.text and "http" not in page.text.split("<body>")[0]
    script = httpx.get(f"{service.url}/static/review.js")
    assert script.status_code == 200 and "/v1/predict/" in script.text


def test_a_verdict_raw_multipart_and_overlay(
    service: Service, images: list[Path], predicted: dict
) -> None:
    image = images[0]
    want = predicted[str(image)]
    raw = _post(service, image, overlay=1)
    assert raw.status_code == 200, raw.text
    answer = raw.json()
    for field in ("category", "score", "normalized_score", "verdict", "regions"):
        assert answer[field] == want[field], field
    ready = httpx.get(f"{service.url}/readyz", headers=service.auth()).json()
    assert answer["model"] == ready["model"]
    assert 0 < answer["seconds"] < 120 and answer["threshold"] > 0
    with Image.open(io.BytesIO(base64.b64decode(answer["overlay_png"]))) as overlay:
        assert overlay.format == "PNG" and overlay.size == tuple(want["size"])
    form = httpx.post(
        f"{service.url}/v1/predict/{CAT}",
        files={"image": (image.name, image.read_bytes(), "image/png")},
        headers=service.auth(),
        timeout=120,
    )
    assert form.status_code == 200, form.text
    assert form.json()["score"] == want["score"] and form.json()["filename"] == image.name
    assert "overlay_png" not in form.json()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )


def _jpeg(image: Path) -> bytes:
    buffer = io.BytesIO()
    with Image.open(image) as img:
        img.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _gif(image: Path) -> bytes:
    buffer = io.BytesIO()
    with Image.open(image) as img:
        img.save(buffer, format="GIF")
    return buffer.getvalue()


def _chunks(data: bytes, size: int = 1 << 20):
    for start in range(0, len(data), size):
        yield data[start : start + size]


# (case, path category, content type, body maker, status, words of the message)
BAD = [
    ("unknown category", "tank_screw", "image/png", lambda p: p.read_bytes(), 404, "no category"),
    ("wrong content type", CAT, "text/plain", lambda p: p.read_bytes(), 415, "not accepted"),
    ("gif", CAT, "image/png", _gif, 415, "GIF images are not accepted"),
    ("empty body", CAT, "image/png", lambda p: b"", 400, "empty body"),
    ("not an image", CAT, "image/png", lambda p: b"hello, world" * 100, 400, "not an image"),
    ("truncated png", CAT, "image/png", lambda p: p.read_bytes()[:3000], 400, "truncated"),
    ("truncated jpeg", CAT, "image/jpeg", lambda p: _jpeg(p)[:4000], 400, "truncated"),
    ("huge body", CAT, "image/png", lambda p: b"\x89PNG" + b"\0" * (21 << 20), 413, "20 MB"),
    ("huge, chunked", CAT, "image/png", lambda p: _chunks(b"\0" * (21 << 20)), 413, "20 MB"),
    ("64 megapixels", CAT, "image/png", lambda p: _png_header(8000, 8000), 413, "pixels"),
    ("pixel bomb", CAT, "image/png", lambda p: _png_header(20000, 20000), 413, "pixels"),
]


@pytest.mark.parametrize("case,category,kind,body,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_and_the_next_image_served(
    service: Service,
    images: list[Path],
    predicted: dict,
    case,
    category,
    kind,
    body,
    status,
    words,
) -> None:
    answer = httpx.post(
        f"{service.url}/v1/predict/{category}",
        content=body(images[1]),
        headers={"Content-Type": kind, **service.auth()},
        timeout=120,
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["status"] == status and words in answer.json()["error"]
    if case == "unknown category":
        assert answer.json()["categories"] == [CAT]
    good = _post(service, images[2])
    assert good.status_code == 200 and good.json()["score"] == predicted[str(images[2])]["score"]


def test_multipart_without_the_image_field(service: Service, images: list[Path]) -> None:
    answer = httpx.post(
        f"{service.url}/v1/predict/{CAT}",
        files={"picture": ("a.png", images[0].read_bytes(), "image/png")},
        headers=service.auth(),
    )
    assert answer.status_code == 400 and "no field 'image'" in answer.json()["error"]


def test_the_token_is_required_on_v1(service: Service, images: list[Path]) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        for method, path in (("GET", "/v1/model"), ("POST", f"/v1/predict/{CAT}")):
            answer = httpx.request(
                method,
                f"{service.url}{path}",
                headers={"Content-Type": "image/png", **headers},
                content=images[0].read_bytes() if method == "POST" else None,
            )
            assert answer.status_code == 401, (headers, path)
            assert "token" in answer.json()["error"]
            assert answer.headers["www-authenticate"] == "Bearer"
    assert _post(service, images[0]).status_code == 200
    assert service.process.poll() is None


def test_concurrent_clients_get_the_scores_of_fedpatch_predict(
    service: Service, images: list[Path], predicted: dict
) -> None:
    """8 clients x 10 images at once: every answer, digit for digit, what `fedpatch
    predict` wrote for that image."""

    def client(index: int) -> list[tuple[Path, dict]]:
        order = images[index % len(images) :] + images[: index % len(images)]
        with httpx.Client() as session:
            out = []
            for image in order:
                answer = _post(service, image, client=session)
                assert answer.status_code == 200, answer.text
                out.append((image, answer.json()))
            return out

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(client, range(8)) for a in batch]
    assert len(answers) == 80
    for image, answer in answers:
        want = predicted[str(image)]
        assert answer["score"] == want["score"], image
        assert answer["normalized_score"] == want["normalized_score"]
        assert answer["verdict"] == want["verdict"] and answer["regions"] == want["regions"]
    assert {a["verdict"] for _, a in answers} <= {"OK", "NOK"}
