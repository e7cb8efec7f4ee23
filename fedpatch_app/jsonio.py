"""Reading the JSON files fedpatch writes, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path, error: type[Exception], what: str) -> Any:
    """The JSON in `path`; `error` (e.g. DataError) naming `what` and the file when it is
    missing or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise error(f"{what} {path} is unreadable: {exc}") from None
