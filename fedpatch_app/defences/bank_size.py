"""How large each category's global memory bank may be: the bank-size rule.

`bank_budget(patches, ratio, mode)` sizes each category's global memory bank from its
patch count:
"volume" (the default) = ratio x the category's patches (the centralized size);
"equal" = the same total split equally across categories; "sqrt" = the same total split
in proportion to the square root of the patch counts (the small categories gain, the
large ones lose, less than with "equal").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedpatch_app.errors import ConfigError

BUDGETS = ("volume", "equal", "sqrt")


def bank_budget(patches: Mapping[str, int], ratio: float, mode: str = "volume") -> dict[str, int]:
    """Global bank size per category (see the module doc); every size is at least 1."""
    from fedpatch_app.model.patchcore import coreset_size

    if mode not in BUDGETS:
        raise ConfigError(
            f"run config 'bank-budget': expected one of {', '.join(BUDGETS)}, got {mode!r}"
        )
    volume = {c: coreset_size(int(n), ratio) for c, n in patches.items()}
    if mode == "volume" or len(volume) <= 1:
        return volume
    total = sum(volume.values())
    weights = {c: 1.0 if mode == "equal" else math.sqrt(float(patches[c])) for c in volume}
    wsum = sum(weights.values())
    raw = {c: total * w / wsum for c, w in weights.items()}
    # Largest remainder: the sizes add up to the same total as "volume".
    sizes = {c: int(math.floor(v)) for c, v in raw.items()}
    left = total - sum(sizes.values())
    for c in sorted(raw, key=lambda c: (-(raw[c] - sizes[c]), c))[:left]:
        sizes[c] += 1
    return {c: max(1, v) for c, v in sizes.items()}
