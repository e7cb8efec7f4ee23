"""The `fedpatch` command: everything outside a Flower run.

Each subcommand's arguments are declared here; its work is done by a `run_cli(args)`
function in the module that owns it, imported only when that subcommand runs (so
`fedpatch --help` stays fast and does not import torch).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from fedpatch_app.errors import FedpatchError

log = logging.getLogger("fedpatch")

CATEGORY_HELP = "AutoVI categories (default: all six)"


def _handler(target: str) -> Callable[[argparse.Namespace], int | None]:
    module_name, func_name = target.split(":")

    def run(args: argparse.Namespace) -> int | None:
        module = importlib.import_module(module_name)
        return getattr(module, func_name)(args)

    return run


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download-autovi",
        help="download and unpack the AutoVI dataset from Zenodo (resumable, SHA-256 checked)",
    )
    p.add_argument("--root", required=True, help="folder to unpack the categories into")
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--base-url", default=None, help="alternative mirror of the Zenodo files")
    p.add_argument("--keep-zips", action="store_true", help="keep the zip files after unpacking")
    p.set_defaults(func=_handler("fedpatch_app.data.download:run_cli"))


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write synthetic data in exactly the AutoVI layout")
    p.add_argument("--out", required=True, help="output root (one folder per category)")
    p.add_argument(
        "--scale",
        choices=["tiny", "small", "autovi"],
        default="tiny",
        help="images per folder: tiny, small, or autovi (AutoVI's own counts, ~3,900 images)",
    )
    p.add_argument(
        "--kind",
        choices=["drawn", "photo"],
        default="drawn",
        help="drawn scenes (cheap) or photo scenes (real photographs, realistic defects)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--workers", type=int, default=1, help="processes writing images (same bytes)")
    p.set_defaults(func=_handler("fedpatch_app.data.synthetic:run_cli"))


def _add_partition(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("partition", help="split AutoVI categories across federated clients")
    p.add_argument("--scheme", choices=["category", "iid", "dirichlet"], default="category")
    p.add_argument("--data-root", required=True)
    p.add_argument("--num-clients", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--json", action="store_true", help="print the partition as JSON")
    p.set_defaults(func=_handler("fedpatch_app.data.partition:run_cli"))


def _add_centralized(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("centralized", help="centralized PatchCore baseline: fit, score, evaluate")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--weights", default="imagenet", help="imagenet | none | PATH to a .pth file")
    p.add_argument(
        "--backbone",
        choices=("wide_resnet50_2", "efficientnet_lite0"),
        default="wide_resnet50_2",
        help="feature network (efficientnet_lite0: ImageNet weights installed with fedpatch)",
    )
    p.add_argument("--coreset-ratio", type=float, default=0.1)
    p.add_argument("--image-size", type=int, default=256, help="shorter side after resizing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.set_defaults(func=_handler("fedpatch_app.centralized:run_cli"))


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="official AutoVI metrics from exported anomaly maps")
    p.add_argument("--data-root", required=True)
    p.add_argument("--maps", required=True, help="folder holding <category>/test/<defect>/<id>.png")
    p.add_argument("--out", required=True)
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_handler("fedpatch_app.evaluation.evaluate:run_cli"))


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Markdown report and plots for one or more run folders")
    p.add_argument("runs", nargs="+", help="run folders holding results.json")
    p.add_argument("--out", required=True)
    p.add_argument("--data-root", default=None, help="for heatmap overlays (needs the images)")
    p.set_defaults(func=_handler("fedpatch_app.evaluation.report:run_cli"))


def _add_experiment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run an experiment preset (conf/experiments/*.yaml)")
    p.add_argument("--preset", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--weights", default=None, help="override the preset's weights")
    p.add_argument("--device", default=None, help="override the preset's device")
    p.add_argument("--image-size", type=int, default=None, help="override the preset's image size")
    p.add_argument(
        "--engine",
        choices=("simulation", "inprocess"),
        default="simulation",
        help="federated runs as `flwr run` simulations (default) or through the same "
        "ServerApp/ClientApp code in this process (no Ray, no SuperLink port)",
    )
    p.set_defaults(func=_handler("fedpatch_app.experiment:run_cli"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedpatch",
        description="Federated PatchCore anomaly detection on AutoVI.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        _add_download,
        _add_synth,
        _add_partition,
        _add_centralized,
        _add_evaluate,
        _add_report,
        _add_experiment,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        code = args.func(args)
    except FedpatchError as exc:
        print(f"fedpatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedpatch {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
