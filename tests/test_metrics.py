"""Tests of image AUROC and AUC-sPRO (hand-computed cases, sufficient statistics, validation)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedpatch_app.errors import DataError, ModelError
from fedpatch_app.metrics import (
    FPR_LIMITS,
    SproStatistics,
    auc_spro,
    auc_spro_from_statistics,
    capped_auc,
    image_auroc,
    image_scores,
    level_edges,
    roc_curve_points,
    spro_statistics,
    uniform_edges,
)

KEYS = ["0.01", "0.05", "0.1", "0.3", "1.0"]


@dataclass
class Reg:
    """The three fields the metrics read from ``fedpatch_app.data.autovi.Region``."""

    mask: np.ndarray
    defect: str
    saturation_area: int


def box(shape, rows, cols) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m


def brute_force(maps, regions, limit, defect=None):
    """Independent reference: evaluate at every distinct score, exact step curve, capped area."""
    chosen = [(i, r) for i, regs in enumerate(regions) for r in regs if defect in (None, r.defect)]
    images = [
        i
        for i, regs in enumerate(regions)
        if not regs or defect is None or any(r.defect == defect for r in regs)
    ]
    scores = np.unique(np.concatenate([m.ravel().astype(np.float64) for m in maps]))
    thresholds = np.concatenate([[scores[-1] + 1], scores[::-1], [scores[0] - 1]])
    xs, ys = [], []
    for t in thresholds:
        fp = n = 0
        for i in images:
            normal = np.ones(maps[i].shape, dtype=bool)
            for r in regions[i]:
                normal &= ~r.mask
            fp += int(np.sum(maps[i][normal] > t))
            n += int(normal.sum())
        spro = [min(np.sum(maps[i][r.mask] > t) / r.saturation_area, 1.0) for i, r in chosen]
        xs.append(fp / n)
        ys.append(float(np.mean(spro)))
    x, y = np.array(xs), np.array(ys)  # FPR ascends as the thresholds descend
    keep = x <= limit
    xk, yk = x[keep], y[keep]
    area = float(np.sum((yk[1:] + yk[:-1]) / 2 * np.diff(xk)))
    if limit not in x:  # straight line from the last point below the limit to the next one
        j = np.flatnonzero(keep)[-1]
        y_lim = y[j] + (y[j + 1] - y[j]) * (limit - x[j]) / (x[j + 1] - x[j])
        area += (y[j] + y_lim) / 2 * (limit - x[j])
    return area / limit


def small_case(saturation: int, dtype=np.uint16):
    """One good image (4 px of 0) and one defective 2x4 image, region = left 2x2 block.

    Region scores {3, 3, 1, 1}; normal pixels {2, 0, 0, 0} + the good image's four 0s.
    Curve: (0,0) -> (0, 2/s) at FPR 0 -> (1/8, 2/s) -> (1/8, min(4/s, 1)) -> (1, ...).
    """
    good = np.zeros((2, 2), dtype=dtype)
    bad = np.array([[3, 1, 2, 0], [3, 1, 0, 0]], dtype=dtype)
    region = Reg(box((2, 4), slice(0, 2), slice(0, 2)), "scratch", saturation)
    return [good, bad], [[], [region]]


# ----------------------------------------------------------------------------------------------
# AUC-sPRO on hand-computed cases


@pytest.mark.parametrize(
    ("saturation", "expected_low", "expected_full"),
    [
        (4, 0.5, 0.5 / 8 + 7 / 8),  # no saturation: relative threshold 1.0, floor(1.0 * 4)
        (2, 1.0, 1.0),  # relative threshold 0.5: floor(0.5 * 4) = 2, half the region saturates
        (3, 2 / 3, (2 / 3) / 8 + 7 / 8),  # absolute threshold 3: min(3, 4)
    ],
)
@pytest.mark.parametrize("dtype", [np.uint16, np.float64, np.float32])
def test_saturation_hand_computed(saturation, expected_low, expected_full, dtype):
    maps, regions = small_case(saturation, dtype)
    res = auc_spro(maps, regions)
    # up to FPR 1/8 the curve is flat at 2/s, so every limit below 1/8 gives 2/s
    for key in ("0.01", "0.05", "0.1"):
        assert res.auc[key] == pytest.approx(expected_low, abs=1e-12)
    assert res.auc["1.0"] == pytest.approx(expected_full, abs=1e-12)
    # at 0.3: 0.125 * a + 0.175 * b, over 0.3
    a, b = min(2 / saturation, 1.0), min(4 / saturation, 1.0)
    assert res.auc["0.3"] == pytest.approx((0.125 * a + 0.175 * b) / 0.3, abs=1e-12)
    assert res.per_defect["scratch"] == pytest.approx(res.auc, abs=1e-15)
    assert res.fpr[0] == 0 and res.fpr[-1] == 1 and res.spro[-1] == 1
    assert np.all(np.diff(res.thresholds) <= 0) and np.all(np.diff(res.fpr) >= 0)


def test_perfect_maps_score_one_everywhere():
    rng = np.random.default_rng(0)
    maps, regions = [], []
    for i in range(6):
        m = rng.integers(0, 1000, size=(20, 24)).astype(np.uint16)
        regs = []
        if i % 2:
            mask = box(m.shape, slice(3 + i, 9 + i), slice(4, 10))
            m[mask] = 5000 + rng.integers(0, 100, size=int(mask.sum()))
            regs.append(Reg(mask, "dent", int(mask.sum())))
        maps.append(m)
        regions.append(regs)
    res = auc_spro(maps, regions)
    assert res.auc == pytest.approx(dict.fromkeys(KEYS, 1.0), abs=1e-12)
    assert res.per_defect["dent"] == pytest.approx(dict.fromkeys(KEYS, 1.0), abs=1e-12)


def test_inverted_maps_score_zero():
    maps, regions = [], []
    for i in range(4):
        m = np.full((10, 10), 100.0) + np.arange(100).reshape(10, 10)
        regs = []
        if i >= 2:
            mask = box(m.shape, slice(2, 5), slice(2, 6))
            m[mask] = 1.0  # regions get the lowest scores
            regs.append(Reg(mask, "dent", 6))
        maps.append(m)
        regions.append(regs)
    res = auc_spro(maps, regions)
    assert res.auc == pytest.approx(dict.fromkeys(KEYS, 0.0), abs=1e-12)


def random_case(seed: int, n_levels: int = 6):
    """Few score levels, several regions per image, two defect types, some in one image."""
    rng = np.random.default_rng(seed)
    maps, regions = [], []
    for i in range(7):
        m = rng.integers(0, n_levels, size=(9, 11)).astype(np.uint16)
        regs = []
        if i >= 3:
            for k, name in enumerate(["crack", "dent"][: 1 + (i % 2)] if i != 5 else ["dent"]):
                r0 = 1 + 4 * k
                mask = box(m.shape, slice(r0, r0 + 3), slice(i - 2, i + 2))
                m[mask] = np.minimum(m[mask] + rng.integers(0, 3, size=int(mask.sum())), n_levels)
                area = int(mask.sum())
                sat = area // 2 if name == "crack" else min(5, area)
                regs.append(Reg(mask, name, sat))
        maps.append(m)
        regions.append(regs)
    return maps, regions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_several_regions_and_defect_types_match_brute_force(seed):
    maps, regions = random_case(seed)
    assert any(len({r.defect for r in regs}) == 2 for regs in regions)
    res = auc_spro(maps, regions)
    for limit, key in zip(FPR_LIMITS, KEYS, strict=True):
        assert res.auc[key] == pytest.approx(brute_force(maps, regions, limit), abs=1e-12)
        for name in ("crack", "dent"):
            expected = brute_force(maps, regions, limit, defect=name)
            assert res.per_defect[name][key] == pytest.approx(expected, abs=1e-12)


def test_dtype_does_not_change_integer_maps():
    maps, regions = random_case(3)
    a = auc_spro(maps, regions)
    b = auc_spro([m.astype(np.float64) for m in maps], regions)
    c = auc_spro([m.astype(np.float32) for m in maps], regions)
    assert a.auc == pytest.approx(b.auc, abs=1e-12)
    assert a.auc == pytest.approx(c.auc, abs=1e-12)
    assert a.per_defect == b.per_defect


def test_subsampled_quantiles_are_seeded_and_close():
    maps, regions = random_case(4, n_levels=200)
    full = auc_spro(maps, regions)
    s1 = auc_spro(maps, regions, max_samples=140, seed=1)
    s2 = auc_spro(maps, regions, max_samples=140, seed=1)
    assert s1.auc == s2.auc
    assert np.array_equal(s1.thresholds, s2.thresholds)
    assert s1.auc["1.0"] == pytest.approx(full.auc["1.0"], abs=0.02)


def test_input_errors():
    maps, regions = small_case(2)
    with pytest.raises(DataError, match="region"):
        auc_spro([maps[0]], [[]])
    with pytest.raises(DataError, match="2 anomaly maps but 1"):
        auc_spro(maps, regions[:1])
    bad = Reg(regions[1][0].mask, "scratch", 0)
    with pytest.raises(DataError, match="saturation area 0"):
        auc_spro(maps, [[], [bad]])
    with pytest.raises(DataError, match="NaN"):
        auc_spro([maps[0], np.full((2, 4), np.nan)], regions)
    with pytest.raises(DataError, match="limit"):
        auc_spro(maps, regions, limits=(0.0,))


def test_capped_auc_interpolates_at_the_limit():
    fpr = np.array([0.0, 0.2, 1.0])
    y = np.array([0.0, 1.0, 1.0])
    # up to 0.1: triangle under y = 5x, area 0.025, / 0.1
    assert capped_auc(fpr, y, 0.1) == pytest.approx(0.25)
    assert capped_auc(fpr, y, 0.2) == pytest.approx(0.5)
    assert capped_auc(fpr, y, 1.0) == pytest.approx(0.9)


# ----------------------------------------------------------------------------------------------
# Sufficient statistics


def level_case(seed: int):
    """16-bit maps with many ties and a wide range, regions of two defect types."""
    rng = np.random.default_rng(seed)
    maps, regions = [], []
    for i in range(10):
        m = (rng.integers(0, 40, size=(30, 32)) * 1500).astype(np.uint16)
        m[rng.random(m.shape) < 0.3] = rng.integers(0, 65536, size=1)[0]
        regs = []
        if i >= 4:
            for k in range(1 + i % 3):
                mask = box(m.shape, slice(2 + 8 * k, 8 + 8 * k), slice(i, i + 9))
                m[mask] = np.minimum(m[mask].astype(np.int64) + 20000, 65535).astype(np.uint16)
                name = "crack" if k % 2 == 0 else "dent"
                regs.append(Reg(mask, name, int(mask.sum()) // (1 + k)))
        maps.append(m)
        regions.append(regs)
    return maps, regions


def assert_same_result(a, b, tol):
    assert a.auc.keys() == b.auc.keys()
    for k in a.auc:
        assert abs(a.auc[k] - b.auc[k]) <= tol
    assert a.per_defect.keys() == b.per_defect.keys()
    for d in a.per_defect:
        for k in a.per_defect[d]:
            assert abs(a.per_defect[d][k] - b.per_defect[d][k]) <= tol


@pytest.mark.parametrize("seed", [0, 1])
def test_statistics_exact_on_integer_levels(seed):
    maps, regions = level_case(seed)
    direct = auc_spro(maps, regions)
    stats = spro_statistics(maps, regions, level_edges())
    pooled = auc_spro_from_statistics(stats)
    assert_same_result(direct, pooled, 1e-9)
    assert np.array_equal(direct.thresholds, pooled.thresholds)
    assert np.allclose(direct.fpr, pooled.fpr, atol=1e-12, rtol=0)
    # float maps holding the same integer levels give the same figures
    assert_same_result(auc_spro([m.astype(np.float32) for m in maps], regions), pooled, 1e-9)
    assert stats.n_images == 10 and stats.n_good == 4 and stats.n_regions == 12


def test_merge_of_halves_equals_whole():
    maps, regions = level_case(2)
    edges = level_edges()
    whole = spro_statistics(maps, regions, edges)
    a = spro_statistics(maps[:6], regions[:6], edges)
    b = spro_statistics(maps[6:], regions[6:], edges)
    merged = a.merge(b)
    for key, value in whole.to_arrays().items():
        assert np.array_equal(merged.to_arrays()[key], value), key
    assert_same_result(auc_spro_from_statistics(merged), auc_spro(maps, regions), 1e-9)


def test_merge_rejects_different_edges():
    maps, regions = level_case(0)
    a = spro_statistics(maps, regions, level_edges())
    b = spro_statistics(maps, regions, level_edges(70000))
    with pytest.raises(ModelError, match="different bin edges"):
        a.merge(b)


def test_coarse_bins_equal_maps_of_bin_centres():
    maps, regions = level_case(3)
    floats = [m.astype(np.float64) / 65535.0 for m in maps]
    edges = uniform_edges(0.0, 1.0, 256)
    stats = spro_statistics(floats, regions, edges)
    centres = 0.5 * (edges[:-1] + edges[1:])
    quantised = [centres[np.clip(np.searchsorted(edges, f, "right") - 1, 0, 255)] for f in floats]
    assert_same_result(auc_spro_from_statistics(stats), auc_spro(quantised, regions), 1e-9)
    # and it stays close to the unbinned figure
    assert_same_result(auc_spro_from_statistics(stats), auc_spro(floats, regions), 0.05)


def roundtrip(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        buf = io.BytesIO()
        np.save(buf, v, allow_pickle=False)
        buf.seek(0)
        out[k] = np.load(buf, allow_pickle=False)
    return out


def test_arrays_round_trip():
    maps, regions = level_case(1)
    stats = spro_statistics(maps, regions, level_edges())
    arrays = stats.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    back = SproStatistics.from_arrays(roundtrip(arrays))
    assert back.defect_names == ("crack", "dent")
    for key, value in arrays.items():
        assert np.array_equal(back.to_arrays()[key], value)
    assert_same_result(auc_spro_from_statistics(back), auc_spro_from_statistics(stats), 0.0)


def _corrupt(arrays, key, value):
    bad = dict(arrays)
    bad[key] = value
    return bad


def test_from_arrays_rejects_malformed():
    maps, regions = level_case(0)
    good = spro_statistics(maps, regions, level_edges(256 * 256)).to_arrays()
    rp = good["region_ptr"]
    cases = {
        "missing": {k: v for k, v in good.items() if k != "normal_counts"},
        "extra": {**good, "evil": np.zeros(1)},
        "dtype": _corrupt(good, "pixel_counts", good["pixel_counts"].astype(np.float64)),
        "shape": _corrupt(good, "normal_counts", good["normal_counts"][:-1]),
        "negative": _corrupt(good, "good_counts", good["good_counts"] - 1),
        "edges": _corrupt(good, "edges", good["edges"][::-1].copy()),
        "bin range": _corrupt(good, "region_bins", good["region_bins"] + 70000),
        "ptr": _corrupt(good, "region_ptr", np.concatenate([rp[:-1], [rp[-1] + 1]])),
        "saturation": _corrupt(good, "region_saturation", good["region_saturation"] * 0),
        "too big saturation": _corrupt(
            good, "region_saturation", good["region_saturation"] + 10**6
        ),
        "defect index": _corrupt(good, "region_defects", good["region_defects"] + 5),
        "names": _corrupt(good, "defect_names_utf8", np.frombuffer(b"\xff{", dtype=np.uint8)),
        "names not list": _corrupt(good, "defect_names_utf8", np.frombuffer(b"7", np.uint8)),
        "scalar": _corrupt(good, "n_images", np.array([3])),
        "good > normal": _corrupt(good, "good_counts", good["normal_counts"] + 1),
        "object": _corrupt(good, "region_counts", np.array([1, 2], dtype=object)),
    }
    for name, arrays in cases.items():
        try:
            SproStatistics.from_arrays(arrays)
        except ModelError as e:
            assert "statistics" in str(e), name
        else:
            pytest.fail(f"malformed statistics accepted: {name}")
    assert SproStatistics.from_arrays(good).n_regions == len(rp) - 1


def test_statistics_without_regions_raise_on_auc():
    maps = [np.zeros((4, 4), dtype=np.uint16)]
    stats = spro_statistics(maps, [[]], level_edges())
    with pytest.raises(DataError, match="region"):
        auc_spro_from_statistics(stats)


# ----------------------------------------------------------------------------------------------
# Image level


def test_image_auroc_hand_computed_with_ties():
    scores = [0.1, 0.5, 0.5, 0.5, 0.9, 0.2]
    defects = ["good", "good", "good", "a", "a", "b"]
    res = image_auroc(scores, defects)
    # a: 0.5 beats 0.1 and ties twice (1 + 0.5 + 0.5), 0.9 beats all three -> 5/6
    assert res["a"] == pytest.approx(5 / 6)
    assert res["b"] == pytest.approx(1 / 3)
    assert res["mean"] == pytest.approx((5 / 6 + 1 / 3) / 2)
    assert res["pooled"] == pytest.approx(6 / 9)
    labels = [d != "good" for d in defects]
    assert res["pooled"] == pytest.approx(roc_auc_score(labels, scores))
    assert list(res) == ["mean", "pooled", "a", "b"]


def test_image_auroc_random_ties_equal_sklearn():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=60).astype(float)
    defects = rng.choice(["good", "x", "y"], size=60).tolist()
    res = image_auroc(scores, defects)
    labels = np.array([d != "good" for d in defects])
    assert res["pooled"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-15)
    for d in ("x", "y"):
        sel = np.array([e in ("good", d) for e in defects])
        assert res[d] == pytest.approx(roc_auc_score(labels[sel], scores[sel]), abs=1e-15)
    fpr, tpr = roc_curve_points(scores, defects)
    assert fpr[0] == 0 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(res["pooled"])


def test_image_auroc_errors():
    with pytest.raises(DataError, match="no"):
        image_auroc([0.1, 0.2], ["a", "b"])
    with pytest.raises(DataError, match="every image is 'good'"):
        image_auroc([0.1, 0.2], ["good", "good"])
    with pytest.raises(DataError, match="2 image scores but 1"):
        image_auroc([0.1, 0.2], ["good"])
    with pytest.raises(DataError, match="NaN"):
        roc_curve_points([np.nan, 0.2], ["good", "a"])


def test_image_scores_are_map_maxima():
    maps = [np.array([[1, 7], [3, 2]], dtype=np.uint16), np.array([[0.5, -1.0]])]
    assert image_scores(maps).tolist() == [7.0, 0.5]


def client_case(seed: int, defects: list[list[str]]):
    """One client's 16-bit maps: two good images, then one image per entry of `defects`
    holding a region of each named defect (each defect type lifted by its own amount, so
    that the per-defect figures differ)."""
    lift = {"crack": 30000, "dent": 8000, "scratch": 2000}
    rng = np.random.default_rng(seed)
    maps, regions = [], []
    for names in [[], []] + defects:
        m = (rng.integers(0, 30, size=(24, 24)) * 1500).astype(np.uint16)
        regs = []
        for k, name in enumerate(names):
            mask = box(m.shape, slice(2 + 10 * k, 9 + 10 * k), slice(3 + k, 12 + k))
            m[mask] = np.minimum(m[mask].astype(np.int64) + lift[name], 65535).astype(np.uint16)
            regs.append(Reg(mask, name, int(mask.sum()) // 2))
        maps.append(m)
        regions.append(regs)
    return maps, regions


def test_pooling_clients_holding_different_defect_types_equals_centralized():
    """Each client numbers its defect types by its own sorted names; pooling renumbers
    them by the names of all clients. Client A holds crack and dent, client B dent and
    scratch: B's "dent" is its defect 0, the pooled crack. Without the renumbering a
    defect type loses its regions to another one."""
    from fedpatch_app.metrics.pooling import merge_statistics

    maps_a, regions_a = client_case(0, [["crack"], ["dent"], ["crack", "dent"]])
    maps_b, regions_b = client_case(1, [["dent"], ["scratch"], ["scratch", "dent"]])
    edges = level_edges()
    a = spro_statistics(maps_a, regions_a, edges)
    b = spro_statistics(maps_b, regions_b, edges)
    assert a.defect_names == ("crack", "dent") and b.defect_names == ("dent", "scratch")
    pooled = auc_spro_from_statistics(merge_statistics([a, b]))
    central = auc_spro(maps_a + maps_b, regions_a + regions_b)
    assert set(pooled.per_defect) == {"crack", "dent", "scratch"}
    assert_same_result(pooled, central, 1e-9)
    # The case tells the defect types apart: a mix-up changes the figures.
    assert central.per_defect["scratch"]["0.05"] < central.per_defect["crack"]["0.05"]
    whole = spro_statistics(maps_a + maps_b, regions_a + regions_b, edges)
    merged = merge_statistics([a, b]).to_arrays()
    assert np.array_equal(merged["region_defects"], whole.to_arrays()["region_defects"])
