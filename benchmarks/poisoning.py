"""Dishonest clients against the real ServerApp and ClientApp, with and without defences.

Each scenario is one federated run through the in-process grid (`InProcessGrid`: the real
server and client code, message by message, no Ray), in which one node (the first, by
default; `--attacker`) changes its own replies (`fedpatch_drills.attacks`):

    honest       nobody attacks (the baseline of each defence setting)
    poison       defect-region features of the evaluated test images in its coreset,
                 honest counts
    poison-own   the same with defects of its own (another synthetic data set, never
                 evaluated)
    inflate      every patch of the defect images appended, counts inflated to match
    extreme      a map maximum of 1e30 in its evaluation reply
    steal        every test image of the category claimed as its own
    impersonate  another node's partition id (with defences: keys bound to partitions)

"off" runs use `robust-merge = off`, `map-scaling = exact`, `source-check = false` and no
node identities; the checks of every reply (counts, partition, conflicting claims) are
always on. Prints, per scenario and category, AUC-sPRO@0.3 and image AUROC, the change
from the honest run with the same defences, the rows the robust merge left out (the
attacker's and the honest clients'), the source check's gains (the attacker's, the
largest of an honest client's) and whom it flagged, flags and drops.

    python benchmarks/poisoning.py [--data DIR] [--image-size 64] [--weights none]
        [--partition iid] [--attacks poison,extreme] [--defences both] [--server-blind]
        [--shift N] [--set backbone=efficientnet_lite0] [--json out.json]

`--server-blind`: the server does not see the data (each node partitions its own copy),
so nothing can be checked against the partition. `--shift N`: node N's images are
recoloured (a line whose normal images really differ; implies --server-blind). Without
`--data`, the small synthetic data (`--kind photo` or `drawn`) are generated into the
work folder, with a second set (seed 1) for the attacker's own defects. Pretrained
features: `--weights imagenet --set backbone=efficientnet_lite0 --image-size 128`; the
source check's repair: `--set source-check-action=exclude`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, RecordDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIOS = ("honest", "poison", "poison-own", "inflate", "extreme", "steal", "impersonate")


def _shifted_copy(src: Path, dst: Path) -> Path:
    """A copy of the data whose images look as if lit differently (masks unchanged)."""
    from PIL import Image

    if dst.exists():
        return dst
    shutil.copytree(src, dst)
    gain = np.array([0.7, 0.85, 1.15])
    for path in dst.rglob("*.png"):
        if "ground_truth" in path.parts:
            continue
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.float64)
        Image.fromarray(np.clip(arr * gain + 12, 0, 255).astype(np.uint8)).save(path)
    return dst


def _keys(n: int) -> tuple[dict[int, bytes], dict[str, str]]:
    """One EC key per node (PEM, as the SuperLink reports them) and the identities file's
    content (partition id -> OpenSSH public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem, mapping = {}, {}
    for i in range(n):
        public = ec.generate_private_key(ec.SECP384R1()).public_key()
        pem[1001 + i] = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        ssh = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        mapping[str(i)] = ssh.decode()
    return pem, mapping


def _config(args: argparse.Namespace, work: Path, name: str, defended: bool) -> dict[str, Any]:
    config = {
        "dataset": "autovi",
        "data-root": str(work / "not-on-the-server") if args.server_blind else str(args.data),
        "categories": ",".join(args.categories),
        "partition": args.partition,
        "num-clients": args.clients,
        "min-clients": max(1, args.clients - 2),
        "weights": args.weights,
        "image-size": args.image_size,
        "device": args.device,
        "out-dir": str(work / "runs"),
        "run-name": name,
        "wait-timeout": 0,
        "overwrite": True,
    }
    if not defended:
        config.update({"robust-merge": "off", "map-scaling": "exact", "source-check": False})
    config.update(dict(item.split("=", 1) for item in args.set))
    return config


def _nodes(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    nodes = [{"partition-id": i, "num-partitions": args.clients} for i in range(args.clients)]
    if args.server_blind:
        for node in nodes:
            node["data-root"] = str(args.data)
    if args.shift is not None:
        nodes[args.shift]["data-root"] = str(_shifted_copy(args.data, work / "shifted"))
    return nodes


def _attacker(scenario: str, args: argparse.Namespace, nodes: list[dict[str, Any]]):
    from fedpatch_drills.attacks import Attacker

    if scenario == "honest":
        return None
    kind = "poison" if scenario == "poison-own" else scenario
    own = args.own_defects if scenario == "poison-own" else None
    return Attacker(
        1001 + args.attacker,
        kind,
        Path(args.data),
        defects_from=own,
        victim=args.victim,
        node_config=nodes[args.attacker],
    )


def run_scenario(scenario: str, defended: bool, args: argparse.Namespace, work: Path) -> dict:
    """One federated run; what it produced (or why it failed)."""
    import client_app
    from fedpatch_app.federated.inprocess import InProcessGrid
    from fedpatch_app.federated.protocol.server import run_server
    from fedpatch_app.run_status import read_status
    from fedpatch_drills.client_app import tampered_app

    name = f"{scenario}-{'on' if defended else 'off'}"
    config = _config(args, work, name, defended)
    nodes = _nodes(args, work)
    keys: dict[int, bytes] = {}
    if defended and scenario == "impersonate":
        keys, mapping = _keys(args.clients)
        (work / "identities.json").write_text(json.dumps(mapping), encoding="utf-8")
        config["node-identities"] = str(work / "identities.json")
    attacker = _attacker(scenario, args, nodes)
    app = client_app.app if attacker is None else tampered_app(attacker)
    grid = InProcessGrid(app, nodes, config, public_keys=keys)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=config)
    t0 = time.perf_counter()
    try:
        outcome = run_server(grid, context)
        out = _facts(outcome.results, 1001 + args.attacker, args.attacker)
    except Exception as exc:  # noqa: BLE001 - a failed run is a result of the benchmark
        run_dir = work / "runs" / name
        status = read_status(run_dir) or {}
        out = {"failed": f"{type(exc).__name__}: {exc}"[:300], "kept": status.get("kept", [])}
        out["banks_on_disk"] = sorted(p.stem for p in (run_dir / "model" / "banks").glob("*.npz"))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["attacker"] = attacker.log if attacker is not None else {}
    return out


def _source_check(block: dict | None, attacker: int) -> dict:
    """The source check's gains: the attacker's, the largest honest one, who was flagged."""
    if not block:
        return {}
    gains = {int(p): v["gain"] for p, v in block["sources"].items() if v["gain"] is not None}
    honest = [g for p, g in gains.items() if p != attacker]
    return {
        "attacker_gain": gains.get(attacker),
        "honest_gain_max": max(honest) if honest else None,
        "flagged": sorted(int(p) for p, v in block["sources"].items() if v["flagged"]),
    }


def _facts(results: dict, attacker_node: int, attacker_partition: int) -> dict:
    fed = results["federated"]
    cats = {}
    for cat, block in results["categories"].items():
        support = fed["banks"].get(cat, {}).get("support", {})
        per_client = support.get("clients", {})
        attacker = f"node {attacker_node} "
        cats[cat] = {
            "auc_spro_0.3": block["auc_spro"]["0.3"],
            "image_auroc": block["image_auroc"]["mean"],
            "quarantined_attacker": sum(
                v["quarantined"] for k, v in per_client.items() if k.startswith(attacker)
            ),
            "quarantined_honest": sum(
                v["quarantined"] for k, v in per_client.items() if not k.startswith(attacker)
            ),
            "rows_honest": sum(
                v["rows"] for k, v in per_client.items() if not k.startswith(attacker)
            ),
            "test_images": block["counts"]["test_good"] + block["counts"]["test_defective"],
            "source_check": _source_check(
                fed["banks"].get(cat, {}).get("source_check"), attacker_partition
            ),
        }
    return {
        "categories": cats,
        "flagged": [f"node {f['node_id']}: {f['flag'][:90]}" for f in fed.get("flagged", [])],
        "dropped": [f"node {d['node_id']}: {d['reason'][:90]}" for d in fed["dropped"]],
    }


def _gains(check: dict) -> str:
    if not check:
        return "not run"

    def text(value: float | None) -> str:
        return "-" if value is None else f"{value:+.3f}"

    flagged = ", ".join(f"partition {p}" for p in check["flagged"]) or "nobody"
    return f"{text(check['attacker_gain'])} / {text(check['honest_gain_max'])}, {flagged}"


def _print(results: dict[str, dict]) -> None:
    print(
        "\n| scenario | category | AUC-sPRO@0.3 | change | image AUROC | change | rows left out "
        "(attacker / honest) | source check: gain attacker / largest honest, flagged |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, out in results.items():
        base = results.get(f"honest-{name.rsplit('-', 1)[1]}", {}).get("categories", {})
        if "failed" in out:
            kept = ", ".join(out["banks_on_disk"]) or "none"
            print(f"| {name} | (run failed) | {out['failed'][:80]} | banks kept: {kept} | | | | |")
            continue
        for cat, m in out["categories"].items():
            b = base.get(cat, m)
            print(
                f"| {name} | {cat} | {m['auc_spro_0.3']:.3f} | "
                f"{m['auc_spro_0.3'] - b['auc_spro_0.3']:+.3f} | {m['image_auroc']:.3f} | "
                f"{m['image_auroc'] - b['image_auroc']:+.3f} | {m['quarantined_attacker']} / "
                f"{m['quarantined_honest']} of {m['rows_honest']} | {_gains(m['source_check'])} |"
            )
    for name, out in results.items():
        for line in out.get("flagged", []) + out.get("dropped", []):
            print(f"  {name}: {line}")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="AutoVI-format data (default: small synthetic)")
    p.add_argument("--own-defects", type=Path, help="the attacker's own defect images")
    p.add_argument(
        "--kind", default="photo", choices=["photo", "drawn"], help="synthetic data generated"
    )
    p.add_argument("--categories", nargs="+", default=["pipe_staple", "pipe_clip"])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--weights", default="none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--partition", default="iid", choices=["iid", "category", "dirichlet"])
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--attacker", type=int, default=0, help="partition of the attacking node")
    p.add_argument("--victim", type=int, default=2, help="partition the impersonator claims")
    p.add_argument("--attacks", default=",".join(SCENARIOS[1:]), help="comma-separated, or none")
    p.add_argument("--defences", default="both", choices=["both", "on", "off"])
    p.add_argument("--server-blind", action="store_true")
    p.add_argument("--shift", type=int, default=None, help="node whose images are recoloured")
    p.add_argument("--set", action="append", default=[], help="extra run config KEY=VALUE")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: temporary)")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = p.parse_args(argv)
    args.server_blind = args.server_blind or args.shift is not None
    return args


def _data(args: argparse.Namespace, work: Path) -> None:
    from fedpatch_app.data.synthetic import generate

    if args.data is None:
        args.data = work / "data"
        generate(args.data, scale="small", seed=0, categories=args.categories, kind=args.kind)
    if args.own_defects is None:
        args.own_defects = work / "own-defects"
        generate(
            args.own_defects, scale="small", seed=1, categories=args.categories, kind=args.kind
        )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR)
    args = _arguments(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fedpatch-poisoning-"))
    _data(args, work)
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.defences]
    attacks = [a for a in args.attacks.split(",") if a and a not in ("honest", "none")]
    scenarios = ["honest", *attacks]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown} (known: {', '.join(SCENARIOS)})")
    results = {}
    for defended in modes:
        for scenario in scenarios:
            name = f"{scenario}-{'on' if defended else 'off'}"
            results[name] = run_scenario(scenario, defended, args, work)
            print(f"{name}: {results[name].get('seconds')} s", flush=True)
    _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
