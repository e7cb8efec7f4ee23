"""The robust merge's verdicts on synthetic rows: what is kept, quarantined, dropped."""

from __future__ import annotations

import numpy as np
import pytest

from fedpatch_app.defences.robust_merge import check_support

DIM = 8


def clients(n: int = 4, rows: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Honest IID clients: rows drawn from one distribution."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(rows, DIM)).astype(np.float32) for _ in range(n)]


def far_rows(count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(count, DIM)) + 12.0).astype(np.float32)


def test_honest_clients_keep_every_row() -> None:
    support = check_support(clients(), z=4.0)
    assert support.facts["checked"] and support.facts["quarantined"] == 0
    assert all(v.keep.all() and v.action == "" for v in support.verdicts)


def test_a_few_unsupported_rows_are_an_honest_tail_kept_by_default() -> None:
    """Within an honest tail the default keeps every row (leaving a few out gains nothing
    and moves the merged bank by chance); `rows` and `strict` leave those rows out."""
    parts = clients()
    parts[0][:2] = far_rows(2)
    first = check_support(parts, z=4.0).verdicts[0]
    assert first.action == "kept-tail" and first.unsupported == 2 and first.keep.all()
    for mode in ("rows", "strict"):
        support = check_support(parts, z=4.0, mode=mode)
        first = support.verdicts[0]
        assert first.action == "quarantined" and first.unsupported == 2
        assert not first.keep[:2].any() and first.keep[2:].all()
        assert all(v.keep.all() for v in support.verdicts[1:])


def test_planted_rows_leave_all_the_clients_rows_out() -> None:
    """More unsupported rows than an honest tail gives: the planter's supported rows came
    with them and are left out too (under `rows`, only the unsupported ones)."""
    parts = clients()
    parts[0][:10] = far_rows(10)
    first = check_support(parts, z=4.0).verdicts[0]
    assert first.action == "dropped" and not first.keep.any()
    only = check_support(parts, z=4.0, mode="rows").verdicts[0]
    assert only.action == "quarantined" and only.keep.sum() == 50 and not only.keep[:10].any()


@pytest.mark.parametrize(
    ("mode", "kept"), [("quarantine", True), ("rows", True), ("strict", False)]
)
def test_a_client_whose_rows_all_differ(mode: str, kept: bool) -> None:
    """A line whose images differ as a whole is kept (and flagged) by default; strict
    leaves it out."""
    parts = clients()
    parts[2] = parts[2] + 12.0
    verdict = check_support(parts, z=4.0, mode=mode).verdicts[2]
    assert verdict.share > 0.5
    assert verdict.keep.all() == kept and verdict.keep.any() == kept
    assert verdict.action == ("kept-mostly-unsupported" if kept else "dropped")


def test_nothing_to_compare_with_one_client_unless_a_parent_bank_vouches() -> None:
    only = clients(1)
    alone = check_support(only, z=4.0)
    assert not alone.facts["checked"] and "one client" in alone.facts["reason"]
    planted = [np.concatenate([only[0], far_rows(10)])]
    joined = check_support(planted, z=4.0, reference=clients(1, seed=5)[0])
    assert joined.facts["checked"] and joined.verdicts[0].unsupported == 10


def test_off_checks_nothing() -> None:
    parts = clients()
    parts[0][:10] = far_rows(10)
    support = check_support(parts, z=4.0, mode="off")
    assert not support.facts["checked"] and all(v.keep.all() for v in support.verdicts)


def unequal_holders(large: int, small: int, seed: int = 0) -> list[np.ndarray]:
    """A line with many images and one with few: rows of one heavy-tailed distribution, so
    the large line's extra images reach variety the small one never saw."""
    rng = np.random.default_rng(seed)
    return [rng.standard_t(2, size=(n, DIM)).astype(np.float32) for n in (large, small)]


def test_a_large_honest_line_keeps_its_tail_against_a_small_one() -> None:
    """Rows of a line with 8x the images of the only other holder that the small line does
    not reach are its honest tail: kept (not quarantined, not all dropped). A rule blind
    to the sizes left all its rows out here (32 of 2,400 unsupported: over 1 %)."""
    parts = unequal_holders(2400, 300)
    support = check_support(parts, z=4.0)
    large = support.verdicts[0]
    assert large.unsupported > 0.01 * large.rows, "the case must sit past the equal-size rule"
    assert large.size_ratio == pytest.approx(8.0)
    assert large.action == "kept-tail" and large.keep.all()
    assert all(v.action != "dropped" for v in support.verdicts)


def test_a_large_line_that_plants_more_than_its_tail_loses_its_rows() -> None:
    """The allowance grows with the size ratio, but planted rows beyond it still cost the
    planter all its rows; the small line planting is judged as among equals."""
    parts = unequal_holders(2400, 300)
    parts[0][:300] = far_rows(300)  # 12.5 % of its rows, above 8 x 1 %
    assert check_support(parts, z=4.0).verdicts[0].action == "dropped"
    parts = unequal_holders(2400, 300)
    parts[1][:10] = far_rows(10)
    small = check_support(parts, z=4.0).verdicts[1]
    assert small.size_ratio == pytest.approx(0.125) and small.action == "dropped"


def test_strict_still_quarantines_a_large_lines_unsupported_rows() -> None:
    parts = unequal_holders(2400, 300)
    large = check_support(parts, z=4.0, mode="strict").verdicts[0]
    assert large.action == "quarantined" and not large.keep.all()


def test_the_honest_share_grows_with_the_size_ratio_and_is_capped() -> None:
    from fedpatch_app.defences.robust_merge import (
        MOSTLY,
        PLANTED_SHARE,
        TAIL_CAP,
        honest_share,
        size_ratios,
    )

    assert size_ratios([800, 100, 400]) == [2.0, 0.125, 0.5]
    assert honest_share(0.2) == PLANTED_SHARE and honest_share(1.5) == 1.5 * PLANTED_SHARE
    assert honest_share(8.0) == TAIL_CAP
    assert honest_share(1000.0) == TAIL_CAP < MOSTLY


def test_an_inflater_as_large_as_eight_honest_lines_still_loses_its_rows() -> None:
    """The tail allowance is capped: a client that appended whole defect images (8.4x the
    others' rows, 7.6 % of them unsupported, as measured in the server-blind inflate
    attack) is dropped, while the honest tail of such a size (up to 3 % measured) is kept."""
    from fedpatch_app.defences.robust_merge import action_for

    assert action_for(260, 3430, 8.4, "quarantine") == "dropped"
    assert action_for(103, 3430, 8.4, "quarantine") == "kept-tail"
    assert action_for(120, 3430, 1.0, "quarantine") == "dropped"


def test_a_client_sending_many_shifted_rows_cannot_make_them_the_norm() -> None:
    """Each client weighs the same in the honest spread, whatever its number of rows: a
    client sending 2,000 shifted rows against three 60-row clients is flagged as mostly
    unsupported. Weighed one per row, its 2,000 rows would set the median and none would
    stand out."""
    parts = clients(3)
    parts.append((np.random.default_rng(7).normal(size=(2000, DIM)) + 6.0).astype(np.float32))
    support = check_support(parts, z=4.0)
    shifted = support.verdicts[3]
    assert shifted.share > 0.5 and shifted.action == "kept-mostly-unsupported"
    assert all(v.action == "" for v in support.verdicts[:3])
    strict = check_support(parts, z=4.0, mode="strict").verdicts[3]
    assert strict.action == "dropped" and not strict.keep.any()


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_planted_rows_from_exactly_planted_min_on(offset: int) -> None:
    """Among equal 60-row holders the honest tail share (3 % of 60: 2 rows) is below
    `PLANTED_MIN`, so the count decides: PLANTED_MIN - 1 unsupported rows are a kept tail,
    PLANTED_MIN and more plant rows and cost the client all its rows."""
    from fedpatch_app.defences.robust_merge import PLANTED_MIN, action_for, honest_share

    assert np.ceil(honest_share(1.0) * 60) < PLANTED_MIN, "the count must decide here"
    count = PLANTED_MIN + offset
    expected = "dropped" if offset >= 0 else "kept-tail"
    assert action_for(count, 60, 1.0, "quarantine") == expected
    parts = clients()
    parts[0][:count] = far_rows(count)
    first = check_support(parts, z=4.0).verdicts[0]
    assert first.unsupported == count and first.action == expected
    assert first.keep.any() == (offset < 0)
