"""fedpatch's settings: one schema (`schema.py`) and the views derived from it."""

from fedpatch_app.settings.fields import (
    SETTINGS,
    from_names,
    from_run_config,
    replace,
    to_names,
    to_run_config,
)
from fedpatch_app.settings.schema import (
    MAX_IMAGE_SIZE,
    MAX_SEED,
    MIN_IMAGE_SIZE,
    DPSettings,
    RunSettings,
)

__all__ = [
    "MAX_IMAGE_SIZE",
    "MAX_SEED",
    "MIN_IMAGE_SIZE",
    "SETTINGS",
    "DPSettings",
    "RunSettings",
    "from_names",
    "from_run_config",
    "replace",
    "to_names",
    "to_run_config",
]
