"""The leave-one-source-out check's statistics and verdicts (`defences.source_check`)
and its part of the evaluate exchange (`federated.codec_source_check`)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

from fedpatch_app.defences.source_check import (
    PARENT,
    Report,
    SourceDistances,
    auroc,
    bank_sources,
    judge,
    leave_out,
    lower_median,
    report,
)
from fedpatch_app.errors import ModelError
from fedpatch_app.federated import codec_source_check, wire
from fedpatch_app.model.memory_bank import MemoryBank


def test_auroc_by_counting() -> None:
    negatives = np.arange(10, dtype=np.float64)  # 0..9
    assert auroc(np.array([10.0]), negatives) == 1.0
    assert auroc(np.array([-1.0]), negatives) == 0.0
    # 4.0: four negatives below, one tied (half).
    assert auroc(np.array([4.0]), negatives) == pytest.approx(0.45)
    assert auroc(np.array([10.0, -1.0]), negatives) == pytest.approx(0.5)


def test_bank_sources_need_something_left_to_compare() -> None:
    assert bank_sources(np.array([3, 3, 3])) == []
    assert bank_sources(np.array([2, 0, 2, 0])) == [0, 2]
    # A parent's rows are never judged but let a single new client be.
    assert bank_sources(np.array([PARENT, PARENT, 4])) == [4]
    assert bank_sources(np.array([PARENT, PARENT])) == []


def test_source_distances_equal_searches_of_each_source_and_of_the_whole_bank() -> None:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(30, 8)).astype(np.float32)
    owners = np.repeat([1, 0, PARENT], 10)
    queries = rng.normal(size=(2 * 3 * 4, 8)).astype(np.float32)
    found = SourceDistances(bank, owners)
    assert found.sources == [0, 1] and found.groups == [0, 1, PARENT]
    found(0, queries, (2, 3, 4))
    grids = found.take()
    assert len(grids) == 2 and grids[0].shape == (3, 3, 4) and found.take() == []
    flat = np.concatenate([g.reshape(3, -1) for g in grids], axis=1)
    scores = leave_out(flat, 2)
    whole = MemoryBank(bank).patch_scores(queries)
    without_0 = MemoryBank(bank[owners != 0]).patch_scores(queries)
    without_1 = MemoryBank(bank[owners != 1]).patch_scores(queries)
    np.testing.assert_allclose(scores[0], whole, rtol=1e-5)
    np.testing.assert_allclose(scores[1], without_0, rtol=1e-5)
    np.testing.assert_allclose(scores[2], without_1, rtol=1e-5)


def test_a_report_sees_planted_rows_left_out() -> None:
    """Source 1 holds rows right at the defect patches: with it the defects score like
    normal patches, without it they stand out."""
    rng = np.random.default_rng(1)
    good_patches = rng.normal(size=(200, 4)).astype(np.float32)
    defect = (rng.normal(size=(6, 4)) + 6.0).astype(np.float32)
    bank = np.concatenate([good_patches[:50], defect[:3] + 0.01, good_patches[50:60]])
    owners = np.array([0] * 50 + [1] * 3 + [2] * 10)
    found = SourceDistances(bank, owners)
    found(0, good_patches[100:200], (4, 5, 5))
    good = found.take()
    found(0, np.concatenate([defect, good_patches[60:79]]), (1, 5, 5))
    defect_grid = found.take()
    cells = np.zeros((5, 5), dtype=bool)
    cells.flat[:6] = True
    got = report(defect_grid, [cells], good, len(found.sources))
    assert got is not None and got.positives == 6 and got.negatives == 100
    whole, without = got.values[0], got.values[1:]
    assert without[1] - whole > 0.3  # the planter left out
    assert without[0] - whole <= 0.0 and without[2] - whole <= 0.0  # honest sources
    # Every defect patch had its nearest row among the planter's (they lie by the
    # defects, far from the good rows); the honest sources touch none.
    np.testing.assert_array_equal(got.affected, [0, 6, 0])
    # Nothing to compare: no defect cell.
    assert report(defect_grid, [np.zeros((5, 5), bool)], good, 3) is None


def test_the_lower_median_takes_more_than_half_the_reporters() -> None:
    assert lower_median([0.9, 0.0]) == 0.0
    assert lower_median([0.9, 0.9, 0.0]) == 0.9
    assert lower_median([0.9, 0.9, 0.0, 0.0]) == 0.0


def _report(whole: float, *without: float, affected: tuple[int, ...] | None = None) -> Report:
    touched = np.array(affected if affected is not None else [1] * len(without))
    return Report(np.array([whole, *without]), touched, 10, 100)


def test_judge_flags_by_the_others_and_ignores_what_a_client_says_of_itself() -> None:
    # Sources 0, 1, 2; source 1 planted. Reporter 0 lies that leaving 2 out helps a lot.
    reports = {
        0: _report(0.2, 0.9, 0.6, 0.9),
        1: _report(0.3, 0.2, 0.3, 0.2),  # the planter about itself: nothing to see
        2: _report(0.25, 0.2, 0.7, 0.2),
    }
    verdicts = judge([0, 1, 2], reports, 0.1)
    assert verdicts[1]["flagged"] and verdicts[1]["reporters"] == 2
    assert verdicts[1]["defect_patches"] == 20
    assert verdicts[1]["gain"] == pytest.approx(0.4)
    # Source 2: reporter 0's lie (+0.7) against reporter 1's -0.1: the lower one counts.
    assert not verdicts[2]["flagged"] and verdicts[2]["gain"] == pytest.approx(-0.1)
    assert not verdicts[0]["flagged"]
    assert judge([5], {5: _report(0.1, 0.9)}, 0.1)[5] == {
        "reporters": 0,
        "defect_patches": 0,
        "gains": {},
        "gain": None,
        "flagged": False,
    }


def test_judge_hears_only_reporters_whose_defects_a_source_touches() -> None:
    """A reporter none of whose defect patches has its nearest row among a source's rows
    has nothing to say about it (its gain only reflects the good patches' loss), nor
    has one with too few defect patches."""
    reports = {
        1: _report(0.3, 0.9, 0.3, affected=(4, 0)),
        2: _report(0.3, 0.3, 0.3, affected=(0, 2)),
    }
    verdicts = judge([0, 3], reports, 0.1)
    assert verdicts[0]["reporters"] == 1 and verdicts[0]["flagged"]
    assert verdicts[3]["reporters"] == 1 and not verdicts[3]["flagged"]
    few = {1: Report(np.array([0.3, 0.9]), np.array([2]), 2, 100)}
    assert judge([0], few, 0.1)[0]["reporters"] == 0


def test_reports_travel_and_bad_ones_are_refused() -> None:
    content = RecordDict({wire.INFO: ConfigRecord({"fingerprint": "x"})})
    codec_source_check.add_reports(content, {"pipe_clip": _report(0.5, 0.25, 0.75)})
    got = codec_source_check.read_reports(content, {"pipe_clip": 2}, ["pipe_clip"])
    np.testing.assert_array_equal(got["pipe_clip"].values, [0.5, 0.25, 0.75])
    np.testing.assert_array_equal(got["pipe_clip"].affected, [1, 1])
    assert (got["pipe_clip"].positives, got["pipe_clip"].negatives) == (10, 100)
    with pytest.raises(wire.InvalidReply, match="3 values, 4 expected"):
        codec_source_check.read_reports(content, {"pipe_clip": 3}, ["pipe_clip"])
    with pytest.raises(wire.InvalidReply, match="not asked for"):
        codec_source_check.read_reports(content, {"pipe_clip": 2}, ["pipe_staple"])
    bad = RecordDict({wire.INFO: ConfigRecord({"fingerprint": "x"})})
    codec_source_check.add_reports(bad, {"pipe_clip": _report(0.5, 1.5, 0.75)})
    with pytest.raises(wire.InvalidReply, match=r"\[0, 1\]"):
        codec_source_check.read_reports(bad, {"pipe_clip": 2}, ["pipe_clip"])
    more = RecordDict({wire.INFO: ConfigRecord({"fingerprint": "x"})})
    codec_source_check.add_reports(more, {"pipe_clip": _report(0.5, 0.25, 0.75, affected=(11, 0))})
    with pytest.raises(wire.InvalidReply, match="affected counts"):
        codec_source_check.read_reports(more, {"pipe_clip": 2}, ["pipe_clip"])


def test_row_sources_travel_and_must_match_the_bank() -> None:
    content = RecordDict()
    content.array_records[codec_source_check.SOURCES] = codec_source_check.encode_sources(
        {"pipe_clip": np.array([0, 1, PARENT])}
    )
    got = codec_source_check.decode_sources(content, {"pipe_clip": 3})
    np.testing.assert_array_equal(got["pipe_clip"], [0, 1, -1])
    with pytest.raises(ModelError, match="2 bank rows|3 values"):
        codec_source_check.decode_sources(content, {"pipe_clip": 2})
    with pytest.raises(ModelError, match="no bank"):
        codec_source_check.decode_sources(content, {"pipe_staple": 3})


def test_what_the_server_checks_and_row_sources_as_partitions() -> None:
    from fedpatch_app.defences.source_check_verdicts import checked_sources, row_partitions

    # Part indices of the merge -> the partitions of the holders (parent rows stay -1).
    got = row_partitions(np.array([1, 0, -1, 1]), [3, 7])
    np.testing.assert_array_equal(got, [7, 3, PARENT, 7])
    sources = {
        "private": None,  # differential privacy: rows are noisy means of no one client
        "two": np.array([0, 1, 1]),
        "one": np.array([2, 2]),  # a single holder: nothing left to compare with
        "joined": np.array([PARENT, 4]),
    }
    assert set(checked_sources(sources, enabled=True)) == {"two", "joined"}
    assert checked_sources(sources, enabled=False) == {}


def test_the_merge_names_the_part_of_every_row() -> None:
    from fedpatch_app.model.embedding import FeatureSpec
    from fedpatch_app.model.patchcore import merge_coresets

    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 8)).astype(np.float32)
    b = (rng.normal(size=(30, 8)) + 5).astype(np.float32)
    spec = FeatureSpec(embed_dim=8, projection_dim=None)
    bank, radius, parts = merge_coresets([a, np.zeros((0, 8), np.float32), b], 20, spec)
    same, same_radius, same_parts = merge_coresets([a, b], 20, spec)
    np.testing.assert_array_equal(bank, same)  # an empty part changes nothing but numbers
    assert radius == same_radius
    np.testing.assert_array_equal(np.where(parts == 2, 1, parts), same_parts)
    for row, part in zip(bank, parts, strict=True):
        assert any(np.array_equal(row, r) for r in (a, None, b)[part])
    parent = rng.normal(size=(5, 8)).astype(np.float32)
    joined, _, parts = merge_coresets([a], 12, spec, initial=parent)
    np.testing.assert_array_equal(parts[:5], [PARENT] * 5)
    assert len(joined) == 17 and set(parts[5:].tolist()) == {0}


def test_the_clients_see_run_labels_not_partitions() -> None:
    from fedpatch_app.defences.source_check_verdicts import pseudonyms

    rows = np.array([3, 0, PARENT, 3, 7])
    labels, to_partition = pseudonyms(rows)
    assert labels[2] == PARENT and labels[0] == labels[3]
    assert len({labels[0], labels[1], labels[4]}) == 3
    assert sorted(to_partition.values()) == [0, 3, 7]
    np.testing.assert_array_equal([to_partition.get(int(x), PARENT) for x in labels], rows)
    # Drawn afresh for every run (2^31 labels: equal by chance once in ~10^9).
    assert not np.array_equal(pseudonyms(rows)[0], labels)
