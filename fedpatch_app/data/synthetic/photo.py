"""Photo scenes (``--kind photo``): real photographs with the nuisance variation of a line
and realistic defects, in AutoVI's layout and native sizes.

A good image is the category's window on its photograph with this image's pose, lighting
and noise (`photo_sources`). A defective image is drawn from the same distribution, then
gets one or more defects (`photo_defects`) before lighting and noise are applied, so the
defect is lit and imaged like the rest of the scene. Regions never overlap: where a later
defect covers an earlier one, those pixels belong to the later region.
"""

from __future__ import annotations

import numpy as np

from fedpatch_app.data.synthetic.layout import region_plan, rng_for
from fedpatch_app.data.synthetic.photo_defects import STYLES, make_defect, structure_map
from fedpatch_app.data.synthetic.photo_sources import base_image, finish


def good_image(category: str, seed: int, split_code: int, index: int) -> np.ndarray:
    """A good image of ``category``: (h, w, 3) uint8 at the native size."""
    rng = rng_for(seed, category, split_code, index)
    return finish(base_image(category, rng), rng)


def defect_image(
    category: str, folder: str, seed: int, folder_code: int, index: int
) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Test image ``index`` of defect ``folder`` and its regions ``[(defect type, mask)]``."""
    rng = rng_for(seed, category, folder_code, index)
    img = base_image(category, rng)
    structure = structure_map(img)
    taken = np.zeros(img.shape[:2], dtype=bool)
    regions: list[tuple[str, np.ndarray]] = []
    for k, defect in enumerate(region_plan(category, folder, index, rng)):
        styles = STYLES[defect]
        style = styles[(index + k) % len(styles)]
        mask = make_defect(img, style, rng, taken, structure)
        regions = [(d, m & ~mask) for d, m in regions]
        regions.append((defect, mask))
        taken |= mask
    return finish(img, rng), [(d, m) for d, m in regions if m.any()]
