"""The service's side of scoring: one loaded model, one Predictor, `slots` images at a time.

An uploaded image, already in a file of the spool folder, is scored with
`Predictor.score`, the code `fedpatch predict` runs, so a part gets the same score over HTTP as from the
command (digit for digit as `fedpatch predict --batch-size 1`: a batch of several images
goes through the backbone together, which moves the last digits).

Scoring runs on `slots` threads of its own (the scoring slots; one by default), one
image per thread, never batched with other requests. Batching concurrent requests would
raise throughput but make a part's score depend on which other parts arrived with it; a
station that posts the same image twice must get the same number. One slot also means one
team of CPU threads for torch (its OpenMP threads belong to the thread that calls it);
`fedpatch serve --scoring-slots` shares the cores among the slots. Reading and checking
the uploads and the HTTP work run on the event loop, beside the scoring.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from fedpatch_app.errors import DataError
from fedpatch_app.inspection.model_folder import Model
from fedpatch_app.inspection.overlay import overlay_image, png_bytes
from fedpatch_app.inspection.predictor import PartResult, Predictor
from fedpatch_app.inspection.uploads import Upload, UploadError

log = logging.getLogger(__name__)

#: Grey level of the warm-up image.
WARM_GREY = 128


class Scorer:
    """Scores uploads of any category of `model`; thread-safe."""

    def __init__(self, model: Model, predictor: Predictor, *, slots: int = 1) -> None:
        self.model = model
        self.predictor = predictor
        self.slots = slots
        self._threads = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="scoring")
        self.ready = threading.Event()
        self.warm_up_error = ""

    @classmethod
    def load(
        cls,
        model: Model,
        *,
        device: str = "auto",
        slots: int = 1,
        runtime: str = "auto",
        weights_file: str | None = None,
    ) -> Scorer:
        """A scorer on `device` and `runtime` (`onnx_predictor.make_predictor`); one image
        per request, so batches hold one image. `weights_file`: the backbone's weights
        file where the model was built from one (as `fedpatch predict --weights-file`)."""
        from fedpatch_app.inspection.onnx_predictor import make_predictor

        threads = max(1, (os.cpu_count() or 1) // slots) if slots > 1 else 0
        predictor = make_predictor(
            model,
            runtime=runtime,
            device=device,
            batch_size=1,
            threads=threads,
            weights_file=weights_file,
        )
        return cls(model, predictor, slots=slots)

    def score(self, category: str, upload: Upload, *, overlay: bool = False) -> dict[str, Any]:
        """The answer to one image: verdict, scores, regions, and the overlay if asked."""
        cat = self.model.category(category)
        path = upload.path
        try:
            result = self.predictor.score(category, [path])[0]
        except DataError as exc:  # decoding failed past the header (a truncated JPEG)
            detail = exc.__cause__ or str(exc).replace(repr(str(path)), "the upload")
            raise UploadError(400, f"the image is truncated or corrupt: {detail}") from None
        answer = self.answer(result)
        if overlay:
            image = overlay_image(path, result.anomaly_map, cat.scaling, result.regions)
            answer["overlay_png"] = base64.b64encode(png_bytes(image)).decode("ascii")
        if upload.filename:
            answer["filename"] = upload.filename
        return answer

    async def score_async(
        self, category: str, upload: Upload, *, overlay: bool = False
    ) -> dict[str, Any]:
        """`score` on a scoring thread, awaited without holding up the event loop."""
        call = partial(self.score, category, upload, overlay=overlay)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def start_warm_up(self) -> Future:
        return self._threads.submit(self.warm_up)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def retire(self) -> None:
        """No new work; what was already submitted is finished."""
        self._threads.shutdown(wait=False)

    def answer(self, result: PartResult) -> dict[str, Any]:
        """The JSON fields of a result (the upload's temporary path left out)."""
        fields = result.to_dict()
        del fields["path"]
        cat = self.model.category(result.category)
        return {
            **fields,
            "threshold": cat.image_threshold,
            "pixel_threshold": cat.pixel_threshold,
            "model": self.model.fingerprint,
        }

    def warm_up(self) -> None:
        """Score a plain grey image of each category once (the first pass through the
        backbone and the kNN index is slow); sets `ready`, or `warm_up_error`."""
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="fedpatch-warm-") as tmp:
                for name, cat in sorted(self.model.categories.items()):
                    path = Path(tmp) / f"{name}.png"
                    Image.new("RGB", cat.native_size, (WARM_GREY,) * 3).save(path)
                    self.predictor.score(name, [path])
        except Exception as exc:  # reported by /readyz; the service stays up to say so
            log.exception("warm-up failed")
            self.warm_up_error = f"warm-up failed: {type(exc).__name__}: {exc}"
            return
        log.info("model warmed up in %.1f s: ready", time.perf_counter() - start)
        self.ready.set()
