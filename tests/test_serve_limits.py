"""The service's limits, in process (the app over httpx's ASGI transport) with a stand-in
predictor: fast, and every case decided by the service's own code, not by timing.

Scoring slots and queue with 503 when full while the probes answer; the token before the
body; malformed forms 400 not 500; the size rule from the header; stalled uploads 408;
/readyz that says nothing without the token; reload and rollback."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fedpatch_app.inspection import service as service_module
from fedpatch_app.inspection.live_model import LiveModel, ModelSource
from fedpatch_app.inspection.model_folder import CategoryModel, load_model, write_model
from fedpatch_app.inspection.predictor import PartResult
from fedpatch_app.inspection.scorer import Scorer
from fedpatch_app.inspection.service import create_app
from fedpatch_app.inspection.uploads import UploadLimits
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import Bank

CAT = "pipe_clip"
TOKEN = "a-long-enough-random-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = FeatureSpec(weights="none", image_size=64, embed_dim=8)


def _write_model(folder: Path, threshold: float = 3.0) -> Path:
    bank = Bank(np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32), SPEC, CAT, 1.5, 40)
    thresholds = {"image": {"raw": threshold}, "pixel": {"raw": 2.0}}
    cats = {CAT: CategoryModel(bank, (400, 400), MapScaling(0.5, 4.0), thresholds, 4)}
    write_model(folder, SPEC, cats, {"run_name": folder.name, "run_kind": "centralized"})
    return folder


class StandIn:
    """Scores every image 1.0 with a flat map at the native size; `gate` (when set) holds
    each scoring until released, so tests can fill the slots."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.started = threading.Semaphore(0)

    def score(self, category: str, paths: list[Path]) -> list[PartResult]:
        self.started.release()
        if self.gate is not None:
            assert self.gate.wait(timeout=60)
        with Image.open(paths[0]) as img:
            size = img.size
        flat = np.ones((400, 400), dtype=np.float32)
        return [PartResult(str(paths[0]), category, 1.0, None, "OK", [], size, flat)]


class StandInSource(ModelSource):
    def load(self) -> Scorer:
        model = load_model(self.path, trusted_keys=self.trusted_keys)
        return Scorer(model, StandIn())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_model(tmp_path_factory.mktemp("served") / "model")


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def _app(model_dir: Path, predictor: Any = None, **options: Any):
    scorer = Scorer(load_model(model_dir), predictor or StandIn())
    scorer.warm_up()
    app = create_app(scorer, token=TOKEN, **options)
    return app, scorer


def _talk(app: Any, talk: Callable[[httpx.AsyncClient], Any]) -> None:
    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            await talk(client)

    asyncio.run(run())


def _predict(client: httpx.AsyncClient, body: Any, kind: str = "image/png", **kwargs: Any):
    return client.post(
        f"/v1/predict/{CAT}", content=body, headers={"Content-Type": kind, **AUTH}, **kwargs
    )


def test_full_slots_answer_503_at_once_and_the_probes_still_answer(model_dir: Path) -> None:
    release = threading.Event()
    stand_in = StandIn()
    app, scorer = _app(model_dir, stand_in, slots=1, queue=1)
    stand_in.gate, stand_in.started = release, threading.Semaphore(0)  # after the warm-up
    image = _png((400, 400))

    async def talk(client: httpx.AsyncClient) -> None:
        first = asyncio.create_task(_predict(client, image))
        await asyncio.to_thread(stand_in.started.acquire)  # the slot is taken
        second = asyncio.create_task(_predict(client, image))  # waits in the queue
        while app.state.service.gate.admitted < 2:
            await asyncio.sleep(0.01)
        third = await _predict(client, image)
        assert third.status_code == 503 and "1 scoring slots and 1 queue" in third.text
        assert third.headers["retry-after"] == "1" and third.headers["connection"] == "close"
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz", headers=AUTH)
        assert ready.json()["scoring"] == {"slots": 1, "queue": 1, "in_flight": 2}
        release.set()
        assert (await first).status_code == 200 and (await second).status_code == 200
        assert (await _predict(client, image)).status_code == 200

    _talk(app, talk)
    scorer.close()


def test_the_token_is_checked_before_the_body_is_read(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, scorer = _app(model_dir)

    async def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the upload of an unauthenticated request was read")

    monkeypatch.setattr(service_module, "read_upload", never)

    async def talk(client: httpx.AsyncClient) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = await client.post(
                f"/v1/predict/{CAT}",
                content=_png((400, 400)),
                headers={"Content-Type": "image/png", **headers},
            )
            assert answer.status_code == 401 and answer.headers["connection"] == "close"
        assert not any(app.state.service.spool.iterdir())

    _talk(app, talk)
    scorer.close()


def _form(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "fedpatchboundary"
    out = b""
    for name, filename, data in parts:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("parts", "status", "words"),
    [
        ([("image", "x" * 100_000 + ".png", b"PNG")], 400, "malformed multipart form"),
        ([("image", "a.png", b"1"), ("image", "b.png", b"2")], 400, "send one file"),
        ([("image", "n" * 300 + ".png", b"1")], 400, "above 255"),
        ([("picture", "a.png", b"1")], 400, "no field 'image'"),
    ],
    ids=["100000-character name", "two image fields", "long file name", "no image field"],
)
def test_malformed_forms_are_400_not_500(
    model_dir: Path, parts: list, status: int, words: str
) -> None:
    app, scorer = _app(model_dir)
    real = _png((400, 400))
    parts = [(n, f, real if d in (b"1", b"2") else d) for n, f, d in parts]
    body, kind = _form(parts)

    async def talk(client: httpx.AsyncClient) -> None:
        answer = await _predict(client, body, kind)
        assert answer.status_code == status and words in answer.json()["error"], answer.text
        assert not any(app.state.service.spool.iterdir())
        good, kind2 = _form([("image", "good.png", real)])
        answer = await _predict(client, good, kind2)
        assert answer.status_code == 200 and answer.json()["filename"] == "good.png"

    _talk(app, talk)
    scorer.close()


@pytest.mark.parametrize(
    ("size", "status", "words"),
    [
        ((4000, 1), 422, "aspect-ratio limit"),
        ((6300, 6300), 413, "4x the category's 400x400"),
        ((801, 801), 413, "4x the category's 400x400"),
    ],
)
def test_the_size_rule_answers_from_the_header(
    model_dir: Path, size: tuple[int, int], status: int, words: str
) -> None:
    app, scorer = _app(model_dir)

    async def talk(client: httpx.AsyncClient) -> None:
        answer = await _predict(client, _png(size, "L"), params={"overlay": 1})
        assert answer.status_code == status and words in answer.json()["error"]
        resized = await _predict(client, _png((800, 800)), params={"overlay": 1})
        assert resized.status_code == 200 and "resized" not in resized.text  # stand-in

    _talk(app, talk)
    scorer.close()


def test_a_stalled_upload_gets_408_and_a_big_chunked_one_413(model_dir: Path) -> None:
    limits = UploadLimits(max_bytes=1 << 20, chunk_seconds=0.2, body_seconds=5.0)
    app, scorer = _app(model_dir, limits=limits)
    stop = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield _png((400, 400))[:100]
        await stop.wait()  # never sends the rest

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"\0" * (1 << 20)

    async def talk(client: httpx.AsyncClient) -> None:
        answer = await _predict(client, stalled())
        assert answer.status_code == 408 and "stalled" in answer.json()["error"]
        stop.set()
        answer = await _predict(client, chunked())
        assert answer.status_code == 413 and "1 MB" in answer.json()["error"]
        assert not any(app.state.service.spool.iterdir())

    _talk(app, talk)
    scorer.close()


def test_readyz_names_the_model_only_with_the_token_and_says_why_not_ready(
    model_dir: Path,
) -> None:
    class Broken(StandIn):
        def score(self, category: str, paths: list[Path]) -> list[PartResult]:
            raise MemoryError

    app, scorer = _app(model_dir)

    async def talk(client: httpx.AsyncClient) -> None:
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        named = (await client.get("/readyz", headers=AUTH)).json()
        assert named["categories"] == [CAT] and named["run_name"] == "model"

    _talk(app, talk)
    scorer.close()
    broken, scorer = _app(model_dir, Broken())

    async def talk_broken(client: httpx.AsyncClient) -> None:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"] == "warm-up failed: MemoryError: "

    _talk(broken, talk_broken)
    scorer.close()


def test_reload_swaps_only_a_verified_model_and_rollback_returns(tmp_path: Path) -> None:
    folder = _write_model(tmp_path / "model")
    source = StandInSource(folder)
    live = LiveModel(source.load(), source)
    live.current.warm_up()
    first = live.current.model.manifest_sha256
    app = create_app(live, token=TOKEN)

    async def talk(client: httpx.AsyncClient) -> None:
        # A broken model in the folder: refused, the current one serves on.
        text = (folder / "model.json").read_text()
        (folder / "model.json").write_text(text.replace('"raw": 3.0', '"raw": NaN'))
        answer = await client.post("/v1/admin/reload", headers=AUTH)
        assert answer.status_code == 409 and "thresholds.image.raw" in answer.json()["error"]
        assert live.current.model.manifest_sha256 == first
        assert (await client.post("/v1/admin/rollback", headers=AUTH)).status_code == 409
        # A good new model: verified, warmed up, swapped in; the old one kept.
        _write_model(folder, threshold=3.5)
        answer = await client.post("/v1/admin/reload", headers=AUTH)
        assert answer.status_code == 200, answer.text
        second = answer.json()["current"]["model_sha256"]
        assert second != first and answer.json()["previous"]["model_sha256"] == first
        model = await client.get("/v1/model", headers=AUTH)
        assert model.json()["categories"][CAT]["thresholds"]["image"]["raw"] == 3.5
        answer = await client.post("/v1/admin/rollback", headers=AUTH)
        assert answer.json()["current"]["model_sha256"] == first
        ready = await client.get("/readyz", headers=AUTH)
        assert ready.json()["model_sha256"] == first
        assert (await client.post("/v1/admin/reload")).status_code == 401

    _talk(app, talk)
    untokened = create_app(live)

    async def talk_open(client: httpx.AsyncClient) -> None:
        answer = await client.post("/v1/admin/reload")
        assert answer.status_code == 403 and "--token-file" in answer.json()["error"]

    _talk(untokened, talk_open)
    assert json.loads((folder / "model.json").read_text())["categories"][CAT]


def test_the_heap_is_trimmed_once_the_gate_is_empty(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "IDLE_TRIM_SECONDS", 0.0)
    app, scorer = _app(model_dir)
    trims = []
    app.state.service.trim = lambda: trims.append(app.state.service.gate.admitted)

    async def talk(client: httpx.AsyncClient) -> None:
        assert (await _predict(client, _png((400, 400)))).status_code == 200
        await asyncio.sleep(0.05)  # the trim runs on the event loop after the answer
        assert trims == [0]

    _talk(app, talk)
    scorer.close()
