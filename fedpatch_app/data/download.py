"""Download and unpack AutoVI from Zenodo: resumable, SHA-256 checked, safe to unpack.

`fedpatch download-autovi --root DIR` fetches `<base_url>/<category>.zip` for each
category, resuming a broken transfer from its `.part` file (HTTP Range), checks the
zip's SHA-256 (against the known value for the official Zenodo files, and against the
value recorded in `DIR/autovi_sha256.json` by an earlier download), unpacks it without
letting any member escape DIR, validates the result with the AutoVI reader and moves it
to `DIR/<category>/` (the flat layout the official evaluator reads). Categories already
present and valid are skipped. Only the standard library is used for HTTP.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

from fedpatch_app.data.autovi import find_category_root, load_category
from fedpatch_app.data.autovi_release import CATEGORIES
from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.hashing import file_sha256 as sha256_file

log = logging.getLogger(__name__)

#: Zenodo record 10.5281/zenodo.10459003 (AutoVI, CC BY-NC-SA 4.0, Renault Group).
ZENODO_URL = "https://zenodo.org/records/10459003/files"

#: The file in the data root that records the SHA-256 of each downloaded zip.
CHECKSUMS_FILE = "autovi_sha256.json"

#: Published SHA-256 of the official zips (as listed by anomalib's AutoVI loader). They are
#: checked only for downloads from `ZENODO_URL`; other mirrors rely on the recorded values.
KNOWN_SHA256: dict[str, str] = {
    "engine_wiring": "252590d3249f7fbdf83a7e9b735ef0df175adc218460247e9a63bef1c03d420c",
    "pipe_clip": "955bb17b3a471e23979f46f998a4723acd00cf3afc4d5edf0578dfb6ea80d6c3",
    "pipe_staple": "fb9287f2cc86d660310e9886fdebbe2bd17269e853e29d06d708c6a996df1b18",
    "tank_screw": "48d7193164b36de03cc10c9f7b1b64ea98a0ce7aa57867c8f1d96341c497b4b0",
    "underbody_pipes": "fc1e53336d46fb2317d71e95c011bac012b609f2898fdb02780c920c19a113c7",
    "underbody_screw": "3e9bf6a43033a22c7c9f927a43c392a3b037d22580a27a48d379d4504d9cc6cf",
}

LICENCE_NOTICE = (
    "AutoVI: Copyright 2023-2024 Renault Group, licensed CC BY-NC-SA 4.0 "
    "(https://creativecommons.org/licenses/by-nc-sa/4.0/); cite doi:10.5281/zenodo.10459003"
)

_CHUNK = 1 << 20
_USER_AGENT = "fedpatch-download/0.1 (+python urllib)"
_RETRY_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class _Retry(Exception):
    """A transfer that may succeed if tried again (resuming from the .part file)."""


# ---------------------------------------------------------------------------- utilities


def _read_records(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read checksum record {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in data.values()
    ):
        raise DataError(
            f"checksum record {path} is malformed (expected {{category: {{'sha256': hex}}}})"
        )
    return data


def _write_records(path: Path, records: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(records.items())), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _total_from_headers(headers: Any) -> int | None:
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------- download


def fetch(
    url: str,
    dest: str | Path,
    *,
    retries: int = 5,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming it with HTTP Range requests.

    A `.part` file left by an earlier, broken transfer is continued, not restarted (when
    the server honours Range). A transfer cut short is retried up to `retries` times.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    while True:
        try:
            _fetch_once(url, part, timeout)
            os.replace(part, dest)
            return dest
        except _Retry as exc:
            failures += 1
            if failures > retries:
                kept = (
                    f"the partial file {part} is kept ({part.stat().st_size} bytes), run the "
                    "command again to resume it"
                    if part.is_file() and part.stat().st_size
                    else "nothing was downloaded"
                )
                raise DataError(
                    f"download of {url} failed {failures} times (last: {exc}); {kept}"
                ) from None
            wait = retry_wait * failures
            log.warning("%s: %s; retrying in %.0f s (resuming from %s)", url, exc, wait, part)
            time.sleep(wait)


def _resume_point(response: Any, url: str, part: Path, have: int) -> tuple[str, int, int | None]:
    """(file mode, bytes already there, total bytes) for a response to a Range request."""
    if getattr(response, "status", 200) == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != have:
            part.unlink(missing_ok=True)
            raise _Retry(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        log.info("resuming %s at byte %d", url, have)
        return "ab", have, None if match.group(3) == "*" else int(match.group(3))
    if have:
        log.info("%s: the server does not resume downloads; starting again", url)
    return "wb", 0, _total_from_headers(response.headers)


def _copy_body(response: Any, part: Path, mode: str, have: int, total: int | None) -> int:
    name = part.name.removesuffix(".part")
    bar = tqdm(
        total=total,
        initial=have,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=None,
    )
    with part.open(mode) as out, bar:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            have += len(chunk)
            bar.update(len(chunk))
    return have


def _http_error(exc: HTTPError, url: str, part: Path, have: int) -> None:
    """Raise what an HTTP error means here (return: the .part file was already complete)."""
    if exc.code == 416 and have:
        match = _UNSATISFIED_RANGE.match(
            exc.headers.get("Content-Range", "") if exc.headers else ""
        )
        if match and int(match.group(1)) == have:
            return
        part.unlink(missing_ok=True)
        raise _Retry(f"the partial file {part} does not match the server's file") from None
    if exc.code in _RETRY_HTTP:
        raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
    raise DataError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None


def _os_error(exc: OSError, url: str, part: Path) -> None:
    if exc.errno == errno.ENOSPC:
        raise DataError(f"no space left on the device while writing {part}") from None
    reason = getattr(exc, "reason", exc)  # URLError, timeouts, resets
    if isinstance(reason, socket.gaierror):
        # No name resolution: offline, or a wrong host. Retrying will not help.
        host = urlsplit(url).hostname
        raise DataError(
            f"cannot download {url}: the host name {host!r} does not resolve ({reason}); "
            "this machine is offline or the address is wrong (a mirror: --base-url)"
        ) from None
    raise _Retry(f"{type(exc).__name__}: {reason}") from None


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"User-Agent": _USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urlopen(request, timeout=timeout) as response:
            mode, have, total = _resume_point(response, url, part, have)
            have = _copy_body(response, part, mode, have, total)
    except HTTPError as exc:
        return _http_error(exc, url, part, have)
    except OSError as exc:
        _os_error(exc, url, part)
    except http.client.HTTPException as exc:  # e.g. IncompleteRead, BadStatusLine
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    if total is not None and have < total:
        raise _Retry(f"connection closed after {have} of {total} bytes")
    if total is not None and have > total:
        part.unlink(missing_ok=True)
        raise _Retry(f"received {have} bytes, more than the announced {total}")


# ------------------------------------------------------------------------------- unpack


def _check_members(zf: zipfile.ZipFile, zip_path: Path, dest: Path) -> int:
    """Reject members that would land outside `dest` or are links; return the unpacked size."""
    dest = dest.resolve()
    total = 0
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        unsafe = (
            name.startswith(("/", "\\"))
            or ".." in parts
            or (parts and (":" in parts[0]))
            or not parts
        )
        if not unsafe:
            target = dest.joinpath(*parts).resolve()
            unsafe = not target.is_relative_to(dest)
        if unsafe:
            raise DataError(f"{zip_path}: unsafe member path {name!r} (outside the target folder)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{zip_path}: member {name!r} is a symbolic link")
        total += info.file_size
    return total


def unpack_zip(zip_path: str | Path, dest: str | Path) -> None:
    """Extract a zip into `dest`, refusing path traversal, links and a full disk."""
    zip_path, dest = Path(zip_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            size = _check_members(zf, zip_path, dest)
            free = shutil.disk_usage(dest).free
            if size > free:
                raise DataError(
                    f"{zip_path} unpacks to {size / 1e9:.2f} GB but {dest} has "
                    f"{free / 1e9:.2f} GB free"
                )
            zf.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"{zip_path} is not a valid zip file: {exc}") from exc
    except (OSError, ValueError) as exc:  # CRC and zlib errors, unreadable archive
        raise DataError(f"cannot unpack {zip_path}: {exc}") from exc


def _locate_category(staging: Path, category: str) -> Path:
    for candidate in (staging / category / category, staging / category, staging):
        if (candidate / "train").is_dir():
            return candidate
    raise DataError(f"the zip of {category} does not hold {category}/train (unpacked in {staging})")


# --------------------------------------------------------------------------------- main


def download_autovi(
    root: str | Path,
    categories: Iterable[str] | None = None,
    base_url: str = ZENODO_URL,
    keep_zips: bool = False,
    *,
    known_sha256: Mapping[str, str] | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
) -> dict[str, dict[str, Any]]:
    """Download, check and unpack AutoVI categories into `root/<category>/`.

    Returns `{category: {"status": "present" | "unpacked", "path": str, "sha256": str|None}}`.
    `known_sha256` defaults to `KNOWN_SHA256` for the Zenodo URL and to none for a mirror.
    """
    root = Path(root)
    names = list(CATEGORIES if categories is None else categories)
    unknown = [c for c in names if c not in CATEGORIES]
    if unknown:
        raise ConfigError(
            f"unknown AutoVI categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
            f"(expected {', '.join(CATEGORIES)})"
        )
    base_url = base_url.rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"--base-url must be an http:// or https:// URL, got {base_url!r}")
    if known_sha256 is None:
        known_sha256 = KNOWN_SHA256 if base_url == ZENODO_URL else {}
    root.mkdir(parents=True, exist_ok=True)
    job = _Job(
        root, base_url, keep_zips, known_sha256, root / CHECKSUMS_FILE, retries, timeout, retry_wait
    )
    return {name: job.category(name) for name in dict.fromkeys(names)}


@dataclass(frozen=True)
class _Job:
    """One `download_autovi` call: where, from where, and how hard to try."""

    root: Path
    base_url: str
    keep_zips: bool
    known: Mapping[str, str]
    record_path: Path
    retries: int
    timeout: float
    retry_wait: float

    def category(self, name: str) -> dict[str, Any]:
        present = self._present(name)
        if present is not None:
            return present
        url, zip_path = f"{self.base_url}/{name}.zip", self.root / f"{name}.zip"
        digest = self._zip(name, url, zip_path)
        self._install(name, zip_path)
        records = _read_records(self.record_path)
        records[name] = {"sha256": digest, "bytes": zip_path.stat().st_size, "url": url}
        _write_records(self.record_path, records)
        if not self.keep_zips:
            zip_path.unlink()
        log.info("%s: ready at %s", name, self.root / name)
        return {"status": "unpacked", "path": str(self.root / name), "sha256": digest}

    def _present(self, name: str) -> dict[str, Any] | None:
        """The category already there (checked), or None when it must be downloaded."""
        target, found = self.root / name, find_category_root(self.root, name)
        if found is not None:
            try:
                load_category(self.root, name)
            except DataError as exc:
                raise DataError(
                    f"{found} is already there but not valid: {exc}. Delete {target} to "
                    "download the category again."
                ) from exc
            log.info("%s: already present at %s, skipped", name, found)
            return {"status": "present", "path": str(found), "sha256": None}
        if target.exists():
            if not (target.is_dir() and not any(target.iterdir())):
                raise DataError(
                    f"{target} exists but holds no AutoVI category (no train/ folder); "
                    "move it away or delete it to download the category"
                )
            target.rmdir()
        return None

    def _expected(self, name: str, url: str) -> tuple[str | None, str]:
        records = _read_records(self.record_path)
        if name in self.known:
            return self.known[name].lower(), f"the published checksum of {url}"
        if name in records:
            return records[name]["sha256"].lower(), f"recorded in {self.record_path}"
        return None, ""

    def _zip(self, name: str, url: str, zip_path: Path) -> str:
        """The category's zip on disk, checked against its SHA-256; returns the digest."""
        expected, source = self._expected(name, url)
        if zip_path.exists():
            digest = sha256_file(zip_path)
            if expected is None or digest == expected:
                log.info("%s: using the zip already downloaded at %s", name, zip_path)
                return digest
            log.warning("%s does not match %s; downloading it again", zip_path, source)
            zip_path.unlink()
        log.info("%s: downloading %s", name, url)
        fetch(url, zip_path, retries=self.retries, timeout=self.timeout, retry_wait=self.retry_wait)
        digest = sha256_file(zip_path)
        if expected is not None and digest != expected:
            zip_path.unlink()
            raise DataError(
                f"SHA-256 of {zip_path} is {digest}, but {expected} was expected ({source}); "
                f"the file was deleted. Run again to download it again; if {url} was "
                f"republished on purpose, remove the {name!r} entry of {self.record_path}."
            )
        return digest

    def _install(self, name: str, zip_path: Path) -> None:
        """Unpack into a staging folder, check it is AutoVI, then move it into place."""
        staging, checking = self.root / f".{name}.unpacking", self.root / f".{name}.checking"
        _remove(staging, checking)
        try:
            log.info("%s: unpacking %s", name, zip_path)
            try:
                unpack_zip(zip_path, staging)
            except DataError:
                if not zipfile.is_zipfile(zip_path):
                    zip_path.unlink()  # e.g. an error page: a later run downloads it again
                raise
            checking.mkdir()
            os.replace(_locate_category(staging, name), checking / name)
            try:
                load_category(checking, name)
            except DataError as exc:
                raise DataError(
                    f"{zip_path} unpacked but the data is not valid AutoVI: {exc} "
                    f"(the zip is kept at {zip_path})"
                ) from exc
            os.replace(checking / name, self.root / name)
        finally:
            _remove(staging, checking)


def _remove(*folders: Path) -> None:
    for folder in folders:
        if folder.exists():
            shutil.rmtree(folder)


def run_cli(args: argparse.Namespace) -> int:
    """`fedpatch download-autovi`."""
    base_url = args.base_url or ZENODO_URL
    print(LICENCE_NOTICE)
    summary = download_autovi(
        args.root, categories=args.categories, base_url=base_url, keep_zips=args.keep_zips
    )
    for name, info in summary.items():
        line = f"{name}: {info['status']} at {info['path']}"
        if info["sha256"]:
            line += f" (sha256 {info['sha256']})"
        print(line)
    return 0
