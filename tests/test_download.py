"""`download-autovi` against a local HTTP server: unpack, resume, checksums, safety."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedpatch_app.cli import main as cli_main
from fedpatch_app.data import download
from fedpatch_app.data.autovi import NATIVE_SIZES, load_category
from fedpatch_app.data.download import CHECKSUMS_FILE, KNOWN_SHA256, download_autovi
from fedpatch_app.errors import ConfigError, DataError

CAT = "engine_wiring"
CONFIG = [
    {
        "defect_name": "fastening",
        "pixel_value": 255,
        "saturation_threshold": 1.0,
        "relative_saturation": True,
    }
]


def _png(size: tuple[int, int], color: tuple[int, int, int], seed: int | None = None) -> bytes:
    buf = io.BytesIO()
    if seed is None:
        Image.new("RGB", size, color).save(buf, format="PNG")
    else:  # incompressible pixels: a zip large enough to be cut in the middle of a transfer
        pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _mask(size: tuple[int, int]) -> bytes:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[10:20, 10:30] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(
    category: str = CAT, *, prefix: str | None = None, extra: dict[str, bytes] | None = None
) -> bytes:
    """A small category zip; members live under `prefix` (default `<category>/`, as on Zenodo)."""
    size = NATIVE_SIZES[category]
    top = f"{category}/" if prefix is None else prefix
    members = {
        "train/good/0000.png": _png(size, (1, 1, 1), seed=1),
        "train/good/0001.png": _png(size, (2, 2, 2)),
        "test/good/0000.png": _png(size, (3, 3, 3)),
        "test/fastening/0000.png": _png(size, (4, 4, 4)),
        "ground_truth/fastening/0000/0000.png": _mask(size),
        "defects_config.json": json.dumps(CONFIG).encode(),
        "readme.md": b"AutoVI test category\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(top + name, data)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass
class Server:
    """A tiny file server on 127.0.0.1 with Range support and fault injection."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True
    cut_first: int = 0  # cut this many responses in the middle of the body
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            data = state.files.get(self.path.split("?")[0])
            if data is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            if rng and state.ranges:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/zip")
            self.end_headers()
            if state.cut_first > 0:
                state.cut_first -= 1
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/files"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _get(server: Server, root: Path, **kwargs: object) -> dict:
    options: dict = {"base_url": server.url, "timeout": 5.0, "retry_wait": 0.0}
    options.update(kwargs)
    return download_autovi(root, [CAT], **options)


def test_download_unpacks_records_and_skips_next_time(server: Server, tmp_path: Path) -> None:
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    root = tmp_path / "autovi"
    summary = _get(server, root)
    digest = hashlib.sha256(data).hexdigest()
    assert summary[CAT] == {"status": "unpacked", "path": str(root / CAT), "sha256": digest}
    cat = load_category(root, CAT)
    assert cat.root == root / CAT  # flattened: root/<cat>/train
    assert len(cat.train) == 2 and len(cat.test) == 2
    (region,) = cat.load_regions(cat.find_test("test/fastening/0000.png"))
    assert region.area == 200
    assert (root / CAT / "readme.md").is_file()
    record = json.loads((root / CHECKSUMS_FILE).read_text())
    assert record[CAT] == {"sha256": digest, "bytes": len(data), "url": f"{server.url}/{CAT}.zip"}
    assert not (root / f"{CAT}.zip").exists()
    assert not (root / f"{CAT}.zip.part").exists()
    assert sorted(p.name for p in root.iterdir()) == [CHECKSUMS_FILE, CAT]

    server.requests.clear()
    again = _get(server, root)
    assert again[CAT]["status"] == "present"
    assert server.requests == []


def test_resumes_a_partial_download(server: Server, tmp_path: Path) -> None:
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    root = tmp_path / "autovi"
    root.mkdir()
    (root / f"{CAT}.zip.part").write_bytes(data[:1000])
    summary = _get(server, root)
    assert server.requests == [(f"/files/{CAT}.zip", "bytes=1000-")]
    assert summary[CAT]["sha256"] == hashlib.sha256(data).hexdigest()
    assert load_category(root, CAT).train


def test_complete_part_file_is_finished_without_a_body(server: Server, tmp_path: Path) -> None:
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    root = tmp_path / "autovi"
    root.mkdir()
    (root / f"{CAT}.zip.part").write_bytes(data)  # complete, but never renamed
    summary = _get(server, root)
    assert server.requests == [(f"/files/{CAT}.zip", f"bytes={len(data)}-")]
    assert summary[CAT]["status"] == "unpacked"


def test_retries_a_transfer_cut_in_the_middle(server: Server, tmp_path: Path) -> None:
    data = make_zip()
    assert len(data) > 200_000
    server.files[f"/files/{CAT}.zip"] = data
    server.cut_first = 1
    summary = _get(server, tmp_path)
    half = (len(data)) // 2
    assert server.requests == [(f"/files/{CAT}.zip", None), (f"/files/{CAT}.zip", f"bytes={half}-")]
    assert summary[CAT]["sha256"] == hashlib.sha256(data).hexdigest()
    assert load_category(tmp_path, CAT).train


def test_gives_up_after_the_retries_and_keeps_the_part(server: Server, tmp_path: Path) -> None:
    server.files[f"/files/{CAT}.zip"] = make_zip()
    server.cut_first = 10
    with pytest.raises(DataError, match=r"failed 3 times .*engine_wiring.zip.part is kept"):
        _get(server, tmp_path, retries=2)
    assert (tmp_path / f"{CAT}.zip.part").stat().st_size > 0


def test_server_without_range_support_restarts(server: Server, tmp_path: Path) -> None:
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    server.ranges = False
    (tmp_path / f"{CAT}.zip.part").write_bytes(b"stale bytes of another file")
    summary = _get(server, tmp_path)
    assert summary[CAT]["sha256"] == hashlib.sha256(data).hexdigest()


def test_checksum_mismatch_with_the_record(server: Server, tmp_path: Path) -> None:
    server.files[f"/files/{CAT}.zip"] = make_zip()
    (tmp_path / CHECKSUMS_FILE).write_text(json.dumps({CAT: {"sha256": "ab" * 32}}))
    with pytest.raises(
        DataError,
        match=r"SHA-256 of .*engine_wiring.zip is [0-9a-f]{64}, but (ab){32} was expected \(recorded in .*autovi_sha256.json\)",
    ):
        _get(server, tmp_path)
    assert not (tmp_path / f"{CAT}.zip").exists()
    assert not (tmp_path / CAT).exists()


def test_known_checksums_are_checked(server: Server, tmp_path: Path) -> None:
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    with pytest.raises(DataError, match="published checksum"):
        _get(server, tmp_path / "a", known_sha256={CAT: "0" * 64})
    good = {CAT: hashlib.sha256(data).hexdigest()}
    assert _get(server, tmp_path / "b", known_sha256=good)[CAT]["status"] == "unpacked"


def test_zenodo_downloads_must_match_the_built_in_checksums(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real download path: a zip fetched from the Zenodo address must have the
    built-in published SHA-256 of its category; the same file from a mirror is accepted.
    (Here the Zenodo address is the local server; the file is not the published one.)"""
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    monkeypatch.setattr(download, "ZENODO_URL", server.url)
    options = {"timeout": 5.0, "retry_wait": 0.0}
    with pytest.raises(DataError, match=rf"but {KNOWN_SHA256[CAT]} was expected \(the published"):
        download_autovi(tmp_path / "a", [CAT], base_url=server.url + "/", **options)
    assert not (tmp_path / "a" / CAT).exists() and not (tmp_path / "a" / f"{CAT}.zip").exists()
    mirror = server.url.replace("127.0.0.1", "localhost")
    got = download_autovi(tmp_path / "b", [CAT], base_url=mirror, **options)
    assert got[CAT]["sha256"] == hashlib.sha256(data).hexdigest()
    # one published value per category, as lowercase hex, all different
    assert sorted(KNOWN_SHA256) == sorted(NATIVE_SIZES)
    assert all(re.fullmatch("[0-9a-f]{64}", v) for v in KNOWN_SHA256.values())
    assert len(set(KNOWN_SHA256.values())) == 6


def test_default_retries_are_five(server: Server, tmp_path: Path) -> None:
    """Without a `retries` argument (as `fedpatch download-autovi` calls it) a transfer cut
    five times still completes, and one cut six times fails after six attempts."""
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    server.cut_first = 5
    assert _get(server, tmp_path / "a")[CAT]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(server.requests) == 6
    server.requests.clear()
    server.cut_first = 6
    with pytest.raises(DataError, match="failed 6 times"):
        _get(server, tmp_path / "b")
    assert len(server.requests) == 6


def test_unpacking_checks_the_free_disk_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zip that unpacks to more bytes than the disk has free is refused before anything
    is written; exactly enough space is enough."""
    import shutil
    from collections import namedtuple

    zip_path = tmp_path / "c.zip"
    zip_path.write_bytes(make_zip())
    with zipfile.ZipFile(zip_path) as zf:
        size = sum(info.file_size for info in zf.infolist())
    usage = namedtuple("usage", "total used free")
    for free, fits in ((size - 1, False), (size, True)):
        dest = tmp_path / f"out-{free}"
        monkeypatch.setattr(shutil, "disk_usage", lambda _, f=free: usage(10 * size, 0, f))
        if fits:
            download.unpack_zip(zip_path, dest)
            assert (dest / CAT / "train" / "good" / "0000.png").is_file()
        else:
            with pytest.raises(DataError, match=rf"unpacks to .* GB but .*out-{free} has"):
                download.unpack_zip(zip_path, dest)
            assert list(dest.iterdir()) == []


def test_kept_zip_is_rechecked_and_reused(server: Server, tmp_path: Path) -> None:
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    _get(server, tmp_path, keep_zips=True)
    assert (tmp_path / f"{CAT}.zip").read_bytes() == data

    import shutil

    shutil.rmtree(tmp_path / CAT)
    server.requests.clear()
    assert _get(server, tmp_path, keep_zips=True)[CAT]["status"] == "unpacked"
    assert server.requests == []  # the kept zip matched its record

    shutil.rmtree(tmp_path / CAT)
    (tmp_path / f"{CAT}.zip").write_bytes(data[:-10] + b"corrupted!")
    assert _get(server, tmp_path)[CAT]["status"] == "unpacked"
    assert len(server.requests) == 1  # mismatch: downloaded again
    assert not (tmp_path / f"{CAT}.zip").exists()


def test_double_nested_zip_is_flattened(server: Server, tmp_path: Path) -> None:
    server.files[f"/files/{CAT}.zip"] = make_zip(prefix=f"{CAT}/{CAT}/")
    _get(server, tmp_path)
    assert (tmp_path / CAT / "train" / "good" / "0000.png").is_file()
    assert load_category(tmp_path, CAT).root == tmp_path / CAT


@pytest.mark.parametrize(
    "member", ["../evil.txt", "/abs/evil.txt", f"{CAT}/../../evil.txt", "C:/evil.txt"]
)
def test_path_traversal_is_refused(server: Server, tmp_path: Path, member: str) -> None:
    server.files[f"/files/{CAT}.zip"] = make_zip(extra={member: b"x"})
    root = tmp_path / "data" / "autovi"
    with pytest.raises(DataError, match="unsafe member path"):
        _get(server, root)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (root / CAT).exists()
    assert not (root / CHECKSUMS_FILE).exists()


def test_symlink_member_is_refused(server: Server, tmp_path: Path) -> None:
    buf = io.BytesIO(make_zip())
    with zipfile.ZipFile(buf, "a") as zf:
        info = zipfile.ZipInfo(f"{CAT}/link")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    server.files[f"/files/{CAT}.zip"] = buf.getvalue()
    with pytest.raises(DataError, match="is a symbolic link"):
        _get(server, tmp_path)


def test_not_a_zip_is_reported_and_dropped(server: Server, tmp_path: Path) -> None:
    server.files[f"/files/{CAT}.zip"] = b"<html>maintenance</html>"
    with pytest.raises(DataError, match=r"engine_wiring.zip is not a valid zip file"):
        _get(server, tmp_path)
    assert not (tmp_path / f"{CAT}.zip").exists()
    assert not (tmp_path / CHECKSUMS_FILE).exists()


def test_invalid_data_in_the_zip_is_reported_and_zip_kept(server: Server, tmp_path: Path) -> None:
    server.files[f"/files/{CAT}.zip"] = make_zip(
        extra={f"{CAT}/test/scratch/0000.png": _png((400, 400), (0, 0, 0))}
    )
    with pytest.raises(
        DataError, match=r"unpacked but the data is not valid AutoVI: .*test/scratch.*zip is kept"
    ):
        _get(server, tmp_path)
    assert (tmp_path / f"{CAT}.zip").exists()
    assert not (tmp_path / CAT).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{CAT}.zip"]


def test_http_error_names_the_url(server: Server, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"cannot download http://127.0.0.1:\d+/files/engine_wiring.zip: HTTP 404"
    ):
        _get(server, tmp_path)


def test_existing_invalid_category_is_not_overwritten(server: Server, tmp_path: Path) -> None:
    (tmp_path / CAT / "train" / "good").mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"already there but not valid: .* Delete .*engine_wiring to download"
    ):
        _get(server, tmp_path)
    assert server.requests == []
    (tmp_path / "pipe_clip" / "other").mkdir(parents=True)
    with pytest.raises(DataError, match=r"pipe_clip exists but holds no AutoVI category"):
        download_autovi(tmp_path, ["pipe_clip"], base_url=server.url)


def test_unknown_category_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown AutoVI category engine_wires"):
        download_autovi(tmp_path, ["engine_wires"])


def test_cli(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_zip()
    server.files[f"/files/{CAT}.zip"] = data
    root = str(tmp_path / "autovi")
    argv = ["download-autovi", "--root", root, "--categories", CAT, "--base-url", server.url]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "CC BY-NC-SA 4.0" in out
    assert f"{CAT}: unpacked at {root}/{CAT} (sha256 {hashlib.sha256(data).hexdigest()})" in out
    assert cli_main(argv) == 0
    assert f"{CAT}: present at {root}/{CAT}" in capsys.readouterr().out
    assert cli_main(["download-autovi", "--root", root, "--categories", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown AutoVI category nope" in err and "Traceback" not in err
