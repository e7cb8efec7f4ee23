"""Which data a federated run uses, and which share of it a client holds.

The server decides the dataset once (`resolve_dataset`): real AutoVI at `data-root`,
or the built-in synthetic data, generated once and deterministically into a cache
folder under `out-dir` (`ensure_synthetic`: a file lock and a completion marker make
it safe when several processes ask at the same time, as simulated clients may).

A node's data (`node_data`) comes either from the run's partition scheme and its
`partition-id`/`num-partitions` (simulation, or deployments that split one copy of the
data), or from an explicit `data-root` (+ optional `categories`) in its node config: then
it holds every train and test image of those categories.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpatch_app.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if needed) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def synthetic_root(out_dir: Path, scale: str, seed: int, kind: str) -> Path:
    """Cache folder of the built-in synthetic data for one scale, kind and seed."""
    return Path(out_dir) / ".synthetic" / f"{kind}-{scale}-seed{seed}"


def _generated(root: Path, kind: str, scale: str, seed: int) -> list[str]:
    """Categories already written under `root` with this kind, scale and seed."""
    from fedpatch_app.data.synthetic import is_synthetic

    records = (is_synthetic(root) or {}).get("per_category") or {}
    want = {"kind": kind, "scale": scale, "seed": int(seed)}
    return [cat for cat, info in records.items() if info == want]


def ensure_synthetic(
    root: Path, scale: str, seed: int, categories: Sequence[str] | None, kind: str
) -> Path:
    """Generate synthetic AutoVI-format data into `root` once; later calls only check the
    generator's marker (written when the data are complete). Safe under concurrent calls
    (file lock), and deterministic (same seed, same files), so every client that
    generates it itself gets identical data."""
    from fedpatch_app.data.autovi_release import CATEGORIES
    from fedpatch_app.data.synthetic import generate

    root = Path(root)
    wanted = list(categories or CATEGORIES)
    with file_lock(root.parent / f".{root.name}.lock"):
        missing = [c for c in wanted if c not in _generated(root, kind, scale, seed)]
        if missing:
            log.info(
                "generating synthetic data (%s, %s, seed %d) for %s into %s",
                kind,
                scale,
                seed,
                ", ".join(missing),
                root,
            )
            generate(root, scale=scale, seed=seed, categories=missing, kind=kind)
    return root


@dataclass
class DatasetChoice:
    """The server's decision: which dataset, where, and what the user must be told."""

    dataset: str  # "autovi" (the data at data-root, any layout) or "synthetic"
    data_root: Path
    categories: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)
    #: The generator's facts when the data are synthetic (built in, or written by
    #: `fedpatch synth` into a folder read as AutoVI), else None.
    synthetic: dict[str, Any] | None = None
    #: Each category's size (width, height) when the server sees the data, else empty.
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Each category's layout when the server sees the data, else empty.
    layouts: dict[str, str] = field(default_factory=dict)

    def seen(self, layout: str) -> DatasetChoice:
        """This choice with the sizes and layouts of its categories read at data_root."""
        from fedpatch_app.data.layouts import category_facts

        if Path(self.data_root).is_dir():
            facts = {c: category_facts(self.data_root, c, layout) for c in self.categories}
            self.sizes = {c: f[0] for c, f in facts.items()}
            self.layouts = {c: f[1] for c, f in facts.items()}
        return self


def _no_autovi(root: Path) -> ConfigError:
    return ConfigError(
        f"run config 'data-root': {root} holds no category (expected "
        f"{root}/<category>/train/good/ (autovi or mvtec layout) or {root}/<category>/good/ "
        "(folder layout)): fix the path, or leave data-root at its default to run on the "
        "built-in synthetic data"
    )


def resolve_dataset(
    settings: Any, *, generate: bool = True, clients_here: bool = False
) -> DatasetChoice:
    """Pick the dataset of a run from `dataset`, `data-root` and `categories`.

    "autovi": the data must be at data-root on the clients; if it is visible here too,
    its categories are checked (with `clients_here`, as in a simulation whose clients
    read this machine's files, it must be visible). "synthetic": generated under
    out-dir (unless `generate` is False: then only the choice is made, as a check
    before a run). "auto": AutoVI if data-root holds any AutoVI category; synthetic
    (with a warning) only while data-root is left at its default: a data-root the user
    gave that holds no AutoVI is an error, never a silent switch to synthetic data.
    """
    from fedpatch_app.data.layouts import available_categories
    from fedpatch_app.settings import RunSettings

    root = Path(settings.data_root)
    found: list[str] = []
    if root.is_dir():
        try:
            found = available_categories(root, settings.layout)
        except DataError:
            found = []
    requested = tuple(settings.categories or found)
    if settings.dataset == "autovi":
        if found:
            missing = [c for c in requested if c not in found]
            if missing and settings.categories:
                raise ConfigError(
                    f"run config 'categories': {', '.join(missing)} not found under "
                    f"data-root {root}"
                )
            cats = tuple(c for c in requested if c in found)
        elif clients_here:
            raise _no_autovi(root)
        else:
            log.info(
                "the data are not visible to the server at %s: the clients must hold them "
                "(node config data-root, or the same path); categories and sizes come from "
                "their replies",
                root,
            )
            cats = requested
        resolved = root.resolve() if root.exists() else root
        choice = DatasetChoice("autovi", resolved, cats, synthetic=synthetic_facts(root))
        return choice.seen(settings.layout) if found else choice
    warnings: list[str] = []
    if settings.dataset == "auto":
        if found:
            cats = tuple(c for c in requested if c in found)
            if not cats:
                raise ConfigError(
                    f"run config 'categories': none of {', '.join(requested)} is under data-root {root}"
                )
            choice = DatasetChoice("autovi", root.resolve(), cats, synthetic=synthetic_facts(root))
            return choice.seen(settings.layout)
        if root != RunSettings.model_fields["data_root"].default:
            raise _no_autovi(root)
        message = (
            f"AutoVI was not found at data-root {root}: this run uses the built-in SYNTHETIC "
            f"data ({settings.synthetic_kind}, {settings.synthetic_scale}, seed {settings.seed}); "
            "its metrics say "
            "nothing about AutoVI"
        )
        log.warning(message)
        warnings.append(message)
    return _synthetic_choice(settings, warnings, generate)


def _synthetic_choice(settings: Any, warnings: list[str], generate: bool) -> DatasetChoice:
    """The built-in synthetic data of the run's settings (generated unless `generate`
    is False)."""
    from fedpatch_app.data.autovi_release import CATEGORIES

    scale, kind, seed = settings.synthetic_scale, settings.synthetic_kind, settings.seed
    syn = synthetic_root(Path(settings.out_dir), scale, seed, kind)
    requested = tuple(settings.categories or CATEGORIES)
    if not generate:
        return DatasetChoice("synthetic", syn.resolve(), requested, warnings)
    ensure_synthetic(syn, scale, seed, requested, kind)
    choice = DatasetChoice("synthetic", syn.resolve(), requested, warnings, synthetic_facts(syn))
    return choice.seen("autovi")


def synthetic_facts(root: Path) -> dict[str, Any] | None:
    """The generator's facts (kind, scale, seed) when `root` holds synthetic data."""
    from fedpatch_app.data.synthetic import is_synthetic

    info = is_synthetic(root)
    if info is None:
        return None
    return {"kind": info.get("kind"), "scale": info.get("scale"), "seed": info.get("seed")}


@dataclass
class NodeData:
    """The images one node holds: per category, paths relative to the category folder of
    its training images for the bank (`fit`), its held-out good training images that
    calibrate the thresholds (`calibration`), and its test images."""

    partition_id: int
    data_root: Path
    fit: dict[str, list[str]]
    calibration: dict[str, list[str]]
    test: dict[str, list[str]]
    #: How the data at data_root are laid out (`data.layouts`; auto: each category's own).
    layout: str = "auto"
    #: The run's agreed size (width, height) of each category, where the plan fixes one.
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def category(self, name: str) -> Any:
        """A category of this node, at the run's agreed size (its images and masks are
        resized to it where their own differ, with a warning)."""
        from dataclasses import replace

        from fedpatch_app.data.layouts import load_category

        category = load_category(self.data_root, name, self.layout)
        agreed = self.sizes.get(name)
        if agreed is None or tuple(agreed) == category.size:
            return category
        log.warning(
            "%s: this node's images are %dx%d, the run's size is %dx%d: they are resized to it",
            name,
            *category.size,
            *agreed,
        )
        return replace(category, size=tuple(agreed))

    @classmethod
    def of(
        cls,
        partition_id: int,
        root: Path,
        train: dict[str, list[str]],
        test: dict[str, list[str]],
        settings: Any,
        layout: str = "auto",
    ) -> NodeData:
        """Split the training images into fit and calibration (`data.calibration`: the
        held-out images are chosen from each category's whole training list)."""
        from fedpatch_app.data.calibration import split_calibration
        from fedpatch_app.data.layouts import load_category

        f, seed = settings.calibration_fraction, settings.seed
        if getattr(settings, "calibration_folds", 0) >= 2:
            f = 0.0  # cross-fitted calibration: every image feeds the bank (client_crossfit)
        splits = {
            cat: split_calibration(cat, rel, f, seed, load_category(root, cat, layout).train_rel)
            for cat, rel in train.items()
        }
        return cls(
            partition_id,
            root,
            {c: s.fit for c, s in splits.items() if s.fit},
            {c: s.calibration for c, s in splits.items() if s.calibration},
            {c: list(v) for c, v in test.items() if v},
            layout,
        )


def _node_value(node_config: Mapping[str, Any], key: str) -> Any:
    value = node_config.get(key)
    return value.strip() if isinstance(value, str) else value


def node_data(plan: Any, node_config: Mapping[str, Any]) -> NodeData:
    """This client's images, from its node config and the run plan (see module doc)."""
    data = _node_data(plan, node_config)
    data.sizes = dict(getattr(plan, "sizes", None) or {})
    return data


def _node_data(plan: Any, node_config: Mapping[str, Any]) -> NodeData:
    from fedpatch_app.data.layouts import available_categories, load_category
    from fedpatch_app.settings.schema import parse_categories

    node_root = _node_value(node_config, "data-root")
    root = Path(node_root) if node_root else Path(plan.data_root)
    layout = node_layout(plan, node_config)
    if plan.dataset == "synthetic":
        # Another machine than the server's may lack it: make the same data locally.
        s = plan.settings
        ensure_synthetic(root, s.synthetic_scale, s.seed, plan.categories, s.synthetic_kind)
    if not root.is_dir():
        raise DataError(f"data-root {root} does not exist on this client")
    found = available_categories(root, layout)
    plan_cats = tuple(plan.categories or found)

    if node_root and "partition-id" not in node_config:
        try:
            named = parse_categories(node_config.get("categories"))
        except ValueError as exc:
            raise ConfigError(f"node config 'categories': {exc}") from None
        cats = named or tuple(c for c in found if c in plan_cats)
        cats = tuple(c for c in cats if c in plan_cats)
        if not cats:
            raise DataError(f"no category of this run found under data-root {root}")
        train: dict[str, list[str]] = {}
        test: dict[str, list[str]] = {}
        for cat in cats:
            category = load_category(root, cat, layout)
            train[cat] = list(category.train_rel)
            test[cat] = list(category.test_rel)
        pid = node_config.get("partition-id", -1)
        pid = int(pid) if isinstance(pid, int) else -1
        return NodeData.of(pid, root, train, test, plan.settings, layout)

    try:
        pid = int(node_config["partition-id"])
        num = int(node_config.get("num-partitions", plan.settings.num_clients))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            "node config: set 'partition-id' and 'num-partitions', or 'data-root' "
            "(and optionally 'categories') for a client that holds whole categories"
        ) from None
    if not 0 <= pid < num:
        raise ConfigError(f"node config 'partition-id' {pid} is outside 0..{num - 1}")
    if num != plan.settings.num_clients:
        log.warning(
            "num-partitions %d (node config) differs from num-clients %d (run config): "
            "partitioning into %d",
            num,
            plan.settings.num_clients,
            num,
        )
    return partition_shares(plan, root, num, [pid], layout)[pid]


def node_layout(plan: Any, node_config: Mapping[str, Any]) -> str:
    """The layout of this node's data: its node config's `layout`, else the run's."""
    from fedpatch_app.data.layouts import LAYOUTS

    value = _node_value(node_config, "layout") or plan.settings.layout
    if value != "auto" and value not in LAYOUTS:
        raise ConfigError(f"node config 'layout': {value!r} is not auto, {', '.join(LAYOUTS)}")
    return str(value)


def partition_shares(
    plan: Any,
    root: Path,
    num: int,
    partitions: Sequence[int] | None = None,
    layout: str | None = None,
) -> dict[int, NodeData]:
    """The data of the run's partitions (all, or `partitions`) of the data at `root`."""
    from fedpatch_app.data.layouts import available_categories
    from fedpatch_app.data.partition import make_partition

    layout = plan.settings.layout if layout is None else layout
    found = available_categories(root, layout)
    cats = [c for c in found if c in (plan.categories or found)]
    if not cats:
        raise DataError(f"no category of this run found under data-root {root}")
    partition = make_partition(
        root,
        scheme=plan.settings.partition,
        num_clients=num,
        alpha=plan.settings.dirichlet_alpha,
        seed=plan.settings.seed,
        categories=cats,
        layout=layout,
    )
    out = {}
    for pid in range(num) if partitions is None else partitions:
        share = partition.clients[pid]
        train = {c: list(v) for c, v in share.train.items() if v}
        out[pid] = NodeData.of(pid, root, train, share.test, plan.settings, layout)
    return out


def expected_shares(plan: Any) -> dict[int, NodeData] | None:
    """What each partition of the run holds, as the server sees it: None when the data
    are not visible at the server's data-root (the clients hold them: nothing to check
    against). Clients that split one copy of the data with `partition-id` and
    `num-partitions` = num-clients hold exactly these shares."""
    root = Path(plan.data_root)
    if not root.is_dir():
        return None
    try:
        return partition_shares(plan, root, plan.settings.num_clients)
    except (ConfigError, DataError) as exc:
        log.info("the server cannot derive the partition at %s (%s): not checked", root, exc)
        return None
