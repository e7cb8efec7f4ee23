"""The clients of a federated run as a few readable tables, one per topic.

Each client's record in results.json (``federated.clients``) holds its status, per-category
counts (images, patches, coreset rows, covering radius), traffic and time, and its own metrics
on its own test images. Flattened into one table that is about 90 columns for six categories;
here it becomes one table per topic, each a client per row:

- status: partition, status, device, categories, why it dropped out;
- one table per per-category topic (images train / test, coreset rows / patches, local radius),
  a column per category;
- traffic and time: bytes up and down per exchange, seconds;
- local metrics: one row per client and category.

Fields this module does not know are still shown: scalars in the status table, per-category
dicts in a table of their own, other dicts in the traffic table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedpatch_app.reports.markdown import fmt, table
from fedpatch_app.results.schema import LIMIT_KEYS

#: Per-category topics shown as one table each: (title, fields joined with " / " in a cell).
CATEGORY_TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("images per category (train / test)", ("train_images", "test_images")),
    ("coreset per category (rows sent / training patches)", ("coreset_rows", "train_patches")),
    ("local covering radius per category", ("local_radius",)),
)
#: Fields of the status table, in this order (other scalars follow).
STATUS_FIELDS = ("partition_id", "status", "device", "categories", "dropped_in", "reason")
LOCAL_METRICS = "local_metrics"
#: Column names of the local metrics that are not AUC-sPRO limits.
METRIC_NAMES = {"image_auroc": "image AUROC mean"}


def client_name(client: Mapping[str, Any]) -> str:
    """``client 0 (node 1001)``; the partition id is what the partition files speak of."""
    pid = client.get("partition_id")
    node = client.get("node_id")
    if pid is None or (isinstance(pid, int) and pid < 0):
        return f"node {node}"
    return f"client {pid} (node {node})"


def _per_category(client: Mapping[str, Any], categories: set[str]) -> dict[str, Mapping]:
    """The client's fields that hold one value per category (not its metrics)."""
    return {
        k: v
        for k, v in client.items()
        if isinstance(v, Mapping) and v and k != LOCAL_METRICS and set(v) <= categories
    }


def _status_table(clients: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per client: partition, status, device... (its scalar fields)."""
    columns = [c for c in STATUS_FIELDS if any(c in x for x in clients)]
    for client in clients:
        columns += [
            k
            for k, v in client.items()
            if k != "node_id" and k not in columns and not isinstance(v, Mapping)
        ]
    rows = [[client_name(x), *(fmt(x.get(c)) for c in columns)] for x in clients]
    return table(["client", *columns], rows)


def _topic_table(
    clients: Sequence[Mapping[str, Any]], fields: Sequence[str], categories: Sequence[str]
) -> list[str]:
    """One row per client, a column per category; several fields joined with ' / '."""
    rows = []
    for client in clients:
        cells = []
        for cat in categories:
            values = [(client.get(f) or {}).get(cat) for f in fields]
            cells.append("-" if all(v is None for v in values) else " / ".join(map(fmt, values)))
        rows.append([client_name(client), *cells])
    return table(["client", *categories], rows)


def _traffic_table(clients: Sequence[Mapping[str, Any]], skip: set[str]) -> list[str]:
    """Bytes up and down and seconds: the client's dicts not keyed by category."""
    columns: list[tuple[str, str]] = []
    for client in clients:
        for key, value in client.items():
            if key in skip or key == LOCAL_METRICS or not isinstance(value, Mapping):
                continue
            columns += [(key, sub) for sub in value if (key, sub) not in columns]
    if not columns:
        return []
    header = [f"{key.replace('_', ' ')}: {sub}" for key, sub in columns]
    rows = [[client_name(x), *(fmt((x.get(k) or {}).get(s)) for k, s in columns)] for x in clients]
    return table(["client", *header], rows)


def _local_metrics_table(clients: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per client and category it tested: ``<category>.auc_spro.<limit>`` and
    ``<category>.image_auroc`` keys; other keys as extra columns; n/a where none."""
    columns = [f"auc_spro.{k}" for k in LIMIT_KEYS] + ["image_auroc"]
    rows_of: dict[tuple[str, str], dict[str, Any]] = {}
    for client in clients:
        tested = client.get("test_images") or {}
        for cat in tested if isinstance(tested, Mapping) else {}:
            rows_of[(client_name(client), str(cat))] = {"test images": tested[cat]}
        for key, value in (client.get(LOCAL_METRICS) or {}).items():
            cat, _, metric = str(key).partition(".")
            rows_of.setdefault((client_name(client), cat), {})[metric] = value
            if metric not in columns:
                columns.append(metric)
    if not any(len(v) > 1 for v in rows_of.values()):
        return []
    header = [METRIC_NAMES.get(c, c.replace("auc_spro.", "AUC-sPRO@")) for c in columns]
    rows = [
        [name, cat, fmt(values.get("test images")), *(fmt(values.get(c)) for c in columns)]
        for (name, cat), values in rows_of.items()
    ]
    return table(["client", "category", "test images", *header], rows)


def clients_tables(
    clients: Sequence[Any], categories: Sequence[str], label: str, level: int = 4
) -> list[str]:
    """Markdown for the clients of one federated run (see the module doc)."""
    clients = [c for c in clients if isinstance(c, Mapping)]
    if not clients:
        return []
    h = "#" * min(level, 6)
    known = set(categories)
    for client in clients:
        known |= {str(c) for c in client.get("categories") or [] if isinstance(c, str)}
    per_cat: dict[str, None] = {}
    for client in clients:
        per_cat.update(dict.fromkeys(_per_category(client, known)))
    cats = list(categories) + sorted(known - set(categories))
    lines = [f"{h} Clients: status ({label})", "", *_status_table(clients)]
    topics = [(t, f) for t, f in CATEGORY_TOPICS if any(x in per_cat for x in f)]
    listed = {x for _, f in topics for x in f}
    topics += [(k.replace("_", " ") + " per category", (k,)) for k in per_cat if k not in listed]
    for title, fields in topics:
        lines += [f"{h} Clients: {title} ({label})", "", *_topic_table(clients, fields, cats)]
    traffic = _traffic_table(clients, set(per_cat))
    if traffic:
        lines += [f"{h} Clients: traffic and time ({label})", "", *traffic]
    local = _local_metrics_table(clients)
    if local:
        lines += [f"{h} Clients: own metrics on own test images ({label})", "", *local]
        lines += [
            "Each client's metrics on its own test images only, with the global bank; "
            "n/a where its split lacks good or defective images. A client's split is a part "
            "of the category's test images, so these figures rest on fewer images than the "
            "pooled ones (see the test images column).",
            "",
        ]
    return lines
