"""Records <-> arrays and the checks on every reply (synthetic numpy payloads, no Flower run)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedpatch_app.errors import ModelError
from fedpatch_app.federated import messages as M
from fedpatch_app.settings import from_names

DIM = 16
CATS = ("pipe_clip", "tank_screw")


@dataclass
class FakeBank:
    features: np.ndarray
    radius: float
    n_patches: int


def limits(**changes) -> M.TrainLimits:
    """Limits of a run with coreset ratio 0.1, oversample 2 and a 1000-row cap, changed by
    the given settings (snake_case names)."""
    base = {"coreset_ratio": 0.1, "local_oversample": 2.0, "max_coreset_rows": 1000}
    settings = from_names({**base, **changes})
    grid = {cat: 25 for cat in CATS}  # 100 patches of 4 images
    return M.TrainLimits(settings, fingerprint="abc", categories=CATS, embed_dim=DIM, grid=grid)


def reply(rows: int = 20, n_patches: int = 100, *, dtype: str = "float32", **kw) -> RecordDict:
    rng = np.random.default_rng(0)
    bank = FakeBank(rng.normal(size=(rows, DIM)).astype(np.float32), 1.5, n_patches)
    return M.encode_train_reply(
        {"pipe_clip": bank},
        {"pipe_clip": 4},
        fingerprint=kw.pop("fingerprint", "abc"),
        partition_id=3,
        transport_dtype=dtype,
        **kw,
    )


def test_train_reply_round_trip() -> None:
    decoded = M.decode_train_reply(reply(), limits())
    assert decoded.partition_id == 3
    part = decoded.coresets["pipe_clip"]
    assert part.features.shape == (20, DIM) and part.features.dtype == np.float32
    assert (part.n_patches, part.n_images, part.radius) == (100, 4, 1.5)


def test_float16_transport_only_when_planned() -> None:
    content = reply(dtype="float16")
    with pytest.raises(M.InvalidReply, match="dtype float16"):
        M.decode_train_reply(content, limits())
    decoded = M.decode_train_reply(content, limits(transport_dtype="float16"))
    assert decoded.coresets["pipe_clip"].features.dtype == np.float32


def test_empty_reply_is_a_client_without_data() -> None:
    content = M.encode_train_reply({}, {}, fingerprint="abc", partition_id=5)
    assert M.decode_train_reply(content, limits()).coresets == {}


def _replace_array(content: RecordDict, values: np.ndarray) -> RecordDict:
    content[M.CORESETS]["pipe_clip"] = Array(values)
    return content


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: _replace_array(c, np.zeros((20, DIM + 1), np.float32)), "dimension"),
        (lambda c: _replace_array(c, np.full((20, DIM), np.nan, np.float32)), "NaN"),
        (lambda c: _replace_array(c, np.full((20, DIM), np.inf, np.float32)), "NaN or infinite"),
        (lambda c: _replace_array(c, np.zeros((21, DIM), np.float32)), "exceeds"),
        (lambda c: _replace_array(c, np.zeros((20, DIM), np.float64)), "dtype float64"),
        (lambda c: _replace_array(c, np.zeros((20 * DIM,), np.float32)), "shape"),
        (lambda c: _replace_array(c, np.zeros((0, DIM), np.float32)), "empty"),
        (lambda c: c[M.INFO].__setitem__("categories", "pipe_clip,bogus"), "unknown categories"),
        (lambda c: c[M.INFO].__setitem__("fingerprint", "zzz"), "fingerprint"),
        (lambda c: c[M.INFO].__setitem__("n-patches.pipe_clip", 2), "implausible"),
        (lambda c: c[M.INFO].__setitem__("n-patches.pipe_clip", "100"), "n-patches"),
        (lambda c: c[M.INFO].__setitem__("radius.pipe_clip", float("nan")), "radius"),
        (
            lambda c: c[M.CORESETS].__setitem__(
                "tank_screw", Array(np.zeros((2, DIM), np.float32))
            ),
            "not listed",
        ),
        (lambda c: c.__delitem__(M.INFO), "lacks"),
        (lambda c: c[M.INFO].__delitem__("partition-id"), "partition-id"),
    ],
)
def test_bad_train_replies_are_rejected_with_a_reason(mutate, reason: str) -> None:
    content = reply()
    mutate(content)
    with pytest.raises(M.InvalidReply, match=reason):
        M.decode_train_reply(content, limits())


def test_absolute_cap_on_rows() -> None:
    # 20 rows are allowed by ratio x oversample on 100 patches, but not by a cap of 10.
    with pytest.raises(M.InvalidReply, match="cap 10"):
        M.decode_train_reply(reply(), limits(max_coreset_rows=10))


def test_declared_shape_must_match_data() -> None:
    content = reply()
    good = content[M.CORESETS]["pipe_clip"]
    # Declares 5 rows but its bytes hold 20.
    content[M.CORESETS]["pipe_clip"] = Array(good.dtype, (5, DIM), good.stype, good.data)
    with pytest.raises(M.InvalidReply, match="declared"):
        M.decode_train_reply(content, limits())


def test_object_arrays_never_decode() -> None:
    content = reply()
    content[M.CORESETS]["pipe_clip"] = Array("object", (20, DIM), "numpy.ndarray", b"junk")
    with pytest.raises(M.InvalidReply, match="dtype object"):
        M.decode_train_reply(content, limits())


def test_banks_round_trip_and_checks() -> None:
    banks = {"pipe_clip": np.ones((3, DIM), np.float32)}
    record = M.encode_banks(banks)
    out = M.decode_banks(record, DIM, CATS)
    np.testing.assert_array_equal(out["pipe_clip"], banks["pipe_clip"])
    with pytest.raises(ModelError, match="shape"):
        M.decode_banks(record, DIM + 1, CATS)
    with pytest.raises(ModelError, match="unknown category"):
        M.decode_banks(record, DIM, ("tank_screw",))


def score_reply(**over) -> RecordDict:
    item = M.CategoryScores(
        map_min=0.5,
        map_max=3.0,
        scores=np.array([1.0, 2.0, 3.0]),
        defects=["good", "good", "unclipped"],
        rel_paths=["test/good/000.png", "test/good/001.png", "test/unclipped/000.png"],
    )
    for k, v in over.items():
        setattr(item, k, v)
    return M.encode_score_reply({"pipe_clip": item}, fingerprint="abc")


def test_score_reply_round_trip() -> None:
    out = M.decode_score_reply(score_reply(), fingerprint="abc", categories=CATS)
    item = out.categories["pipe_clip"]
    np.testing.assert_array_equal(item.scores, [1.0, 2.0, 3.0])
    assert item.defects[2] == "unclipped" and item.map_max == 3.0


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"scores": np.array([1.0, np.nan, 3.0])}, "NaN"),
        ({"scores": np.array([1.0, 2.0, 9.0])}, "outside"),
        ({"map_min": 5.0}, "not finite, ordered"),
        ({"defects": ["good", "good"]}, "defect labels"),
        (
            {"rel_paths": ["test/good/000.png", "test/good/000.png", "test/unclipped/000.png"]},
            "twice",
        ),
        (
            {"rel_paths": ["../../etc/passwd", "test/good/001.png", "test/unclipped/000.png"]},
            "bad test image path",
        ),
        (
            {
                "rel_paths": [
                    "test/unclipped/009.png",
                    "test/good/001.png",
                    "test/unclipped/000.png",
                ]
            },
            "bad test image path",
        ),
    ],
)
def test_bad_score_replies(over: dict, reason: str) -> None:
    with pytest.raises(M.InvalidReply, match=reason):
        M.decode_score_reply(score_reply(**over), fingerprint="abc", categories=CATS)


def test_scalings_and_stats_reply() -> None:
    record = ConfigRecord(M.scaling_config({"pipe_clip": (0.0, 2.0)}))
    assert M.read_scalings(record, CATS) == {"pipe_clip": (0.0, 2.0)}
    with pytest.raises(ModelError, match="unknown category"):
        M.read_scalings(record, ("tank_screw",))
    stats = {"pipe_clip": {"edges": np.arange(3.0), "n_images": np.array(4, dtype=np.int64)}}
    content = M.encode_stats_reply(stats, {"pipe_clip.image_auroc": 0.75}, fingerprint="abc")
    reply = M.decode_stats_reply(content, fingerprint="abc", categories=CATS)
    np.testing.assert_array_equal(reply.stats["pipe_clip"]["edges"], np.arange(3.0))
    assert reply.local == {"pipe_clip.image_auroc": 0.75} and reply.calibration == {}
    content["stats.pipe_clip"]["edges"] = Array(np.array([0.0, np.inf]))
    with pytest.raises(M.InvalidReply, match="NaN or infinite"):
        M.decode_stats_reply(content, fingerprint="abc", categories=CATS)


def test_plan_round_trip_and_fingerprint_check() -> None:
    from fedpatch_app.model.embedding import FeatureSpec

    spec = FeatureSpec(weights="none", image_size=64)
    settings = from_names({"partition": "iid", "seed": 1, "device": "cpu", "batch_size": 4})
    plan = M.Plan(
        settings=settings,
        spec=spec,
        dataset="synthetic",
        data_root="/data",
        categories=("pipe_clip",),
        run_key="run-1",
    )
    record = plan.to_config(phase="train")
    again = M.Plan.from_config(record)
    assert again == plan and again.spec == spec and record["phase"] == "train"
    forged = plan.to_config()
    forged["fingerprint"] = "0" * 16
    with pytest.raises(ModelError, match="fingerprint"):
        M.Plan.from_config(forged)
    broken = plan.to_config()
    broken["settings"] = broken["settings"].replace('"seed": 1', '"seed": -1')
    with pytest.raises(ModelError, match="'seed'"):
        M.Plan.from_config(broken)
    missing = plan.to_config()
    del missing["run-key"]
    with pytest.raises(ModelError, match="run-key"):
        M.Plan.from_config(missing)


def test_bytes_count_broadcast_once() -> None:
    from flwr.app import Message, MessageType

    from fedpatch_app.federated.inprocess import set_task_identity

    set_task_identity()
    content = RecordDict({"a": ArrayRecord({"x": Array(np.zeros(1000, np.float32))})})
    msgs = [Message(content, n, MessageType.EVALUATE) for n in (10, 11, 12)]
    one = M.record_bytes(content)
    assert one >= 4000
    assert M.message_bytes(msgs) == 3 * one
    assert M.message_bytes(msgs, broadcast=True) == one


def test_client_timings_travel_and_implausible_ones_are_refused() -> None:
    from fedpatch_app.federated.wire import read_timings, timing_info

    info = ConfigRecord({"fingerprint": "abc", **timing_info({"extraction": 1.5, "coreset": 0.25})})
    assert read_timings(info) == {"extraction": 1.5, "coreset": 0.25}
    for bad in (-1.0, float("inf"), 1e9, "3"):
        with pytest.raises(M.InvalidReply, match="time.scoring"):
            read_timings(ConfigRecord({"time.scoring": bad}))
    many = ConfigRecord({f"time.p{chr(97 + i)}": 1.0 for i in range(17)})
    with pytest.raises(M.InvalidReply, match="at most 16"):
        read_timings(many)
