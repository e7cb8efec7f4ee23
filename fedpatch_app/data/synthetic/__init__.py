"""Synthetic data in exactly the AutoVI layout, for tests, quick runs and evaluation without
the dataset.

Two kinds (the `synthetic-kind` setting): ``drawn`` scenes (textured shapes that resemble
each category, cheap) and ``photo`` scenes (real photographs shipped in an installed package, with the
nuisance variation of a production line and realistic defects). Three scales: ``tiny``,
``small`` and ``autovi`` (AutoVI's own counts). Every image is seeded; the data root gets
a ``synthetic.json`` marker (`is_synthetic`) so that commands can tell it from real AutoVI.
"""

from fedpatch_app.data.synthetic.drawn import good_image
from fedpatch_app.data.synthetic.layout import (
    AUTOVI_COUNTS,
    DEFECT_CONFIGS,
    SCALES,
    AutoviScale,
    ScaleSpec,
)
from fedpatch_app.data.synthetic.marker import MARKER_NAME, is_synthetic
from fedpatch_app.data.synthetic.writer import KINDS, generate, run_cli

__all__ = [
    "AUTOVI_COUNTS",
    "DEFECT_CONFIGS",
    "KINDS",
    "MARKER_NAME",
    "SCALES",
    "AutoviScale",
    "ScaleSpec",
    "generate",
    "good_image",
    "is_synthetic",
    "run_cli",
]
