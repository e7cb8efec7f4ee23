"""The `fedpatch` command: everything outside a Flower run.

Each subcommand's arguments are declared here; its work is done by a `run_cli(args)`
function in the module that owns it, imported only when that subcommand runs (so
`fedpatch --help` stays fast and does not import torch). Options that are run settings
(`--coreset-ratio`, ...) come from the settings schema (`fedpatch_app.settings`), with the
schema's help, range and default.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable

from fedpatch_app import __version__
from fedpatch_app.errors import FedpatchError
from fedpatch_app.settings.options import add_options
from fedpatch_app.settings.schema import MAX_SEED

log = logging.getLogger("fedpatch")

CATEGORY_HELP = "AutoVI categories (default: all six)"
#: The settings of every command that builds and scores a model.
MODEL_SETTINGS = (
    "categories",
    "backbone",
    "weights",
    "image_size",
    "coreset_ratio",
    "seed",
    "device",
    "batch_size",
    "num_workers",
)
#: The settings of the thresholds every run calibrates.
CALIBRATION_SETTINGS = ("calibration_fraction", "target_false_reject", "target_pixel_fpr")


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, flags)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _handler(target: str) -> Callable[[argparse.Namespace], int | None]:
    module_name, func_name = target.split(":")

    def run(args: argparse.Namespace) -> int | None:
        module = importlib.import_module(module_name)
        return getattr(module, func_name)(args)

    return run


def _parser(sub: argparse._SubParsersAction, name: str, help_text: str, target: str):
    p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=Formatter)
    p.set_defaults(func=_handler(target))
    return p


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "run",
        "the main job: a federated run as a Flower simulation, with an honest exit status",
        "fedpatch_app.federated.main_job:run_cli",
    )
    p.add_argument(
        "--run-config",
        default=None,
        help='settings as flwr run takes them, e.g. "num-clients=3 data-root=\\"data/autovi\\"" '
        "(`fedpatch settings` lists them; default: pyproject.toml's)",
    )
    p.add_argument(
        "--federation-config",
        default=None,
        help='Flower federation settings, e.g. "client-resources-num-cpus=1" '
        "(default: one SuperNode per client, 1 CPU each)",
    )
    p.add_argument(
        "--flwr-home",
        default=None,
        help="Flower's home folder for this run (default: .flwr in the project folder)",
    )


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "download-autovi",
        "download and unpack the AutoVI dataset from Zenodo (resumable, SHA-256 checked)",
        "fedpatch_app.data.download:run_cli",
    )
    p.add_argument("--root", required=True, help="folder to unpack the categories into")
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--base-url", default=None, help="mirror of the Zenodo files (default: Zenodo)")
    p.add_argument("--keep-zips", action="store_true", help="keep the zip files after unpacking")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "synth",
        "write synthetic data in exactly the AutoVI layout",
        "fedpatch_app.data.synthetic:run_cli",
    )
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
    p.add_argument("--seed", type=int, default=0, help="seed of the generator")
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--workers", type=int, default=1, help="processes writing images (same bytes)")


def _add_partition(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "partition",
        "show how the images are split across federated clients",
        "fedpatch_app.data.partition:run_cli",
    )
    p.add_argument(
        "--scheme",
        choices=["category", "iid", "dirichlet"],
        default="category",
        help="partition scheme (conf/partitions/<scheme>.yaml)",
    )
    p.add_argument("--data-root", required=True, help="folder holding AutoVI")
    p.add_argument("--num-clients", type=int, default=5, help="number of clients")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--json", action="store_true", help="print the partition as JSON")


def _add_centralized(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "centralized",
        "centralized PatchCore baseline: fit, score, evaluate",
        "fedpatch_app.centralized:run_cli",
    )
    p.add_argument("--out", required=True, help="run folder to write")
    add_options(
        p,
        ("data_root", *MODEL_SETTINGS, *CALIBRATION_SETTINGS, "overwrite"),
        required=("data_root",),
    )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "evaluate",
        "official AutoVI metrics from exported anomaly maps",
        "fedpatch_app.evaluation.evaluate:run_cli",
    )
    p.add_argument("--data-root", required=True, help="folder holding AutoVI")
    p.add_argument("--maps", required=True, help="folder holding <category>/test/<defect>/<id>.png")
    p.add_argument("--out", required=True, help="folder for results.json")
    p.add_argument("--categories", nargs="+", help=CATEGORY_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the threshold sampling")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "report",
        "Markdown report and plots for one or more run folders",
        "fedpatch_app.evaluation.report:run_cli",
    )
    p.add_argument("runs", nargs="+", help="run folders holding results.json")
    p.add_argument("--out", required=True, help="folder for report.md and plots/")
    p.add_argument(
        "--data-root",
        default=None,
        help="AutoVI folder for heatmap overlays (default: the one each run recorded)",
    )
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="put runs with different patch features (feature fingerprints) in one report, "
        "each tagged with its features (default: refuse them)",
    )


def _add_experiment(sub: argparse._SubParsersAction) -> None:
    from fedpatch_app.experiment.presets import preset_names

    p = _parser(
        sub,
        "experiment",
        "run an experiment preset (conf/experiments/*.yaml) and compare its runs",
        "fedpatch_app.experiment.runner:run_cli",
    )
    p.add_argument(
        "--preset",
        required=True,
        help=f"a preset name ({', '.join(preset_names())}) or the path of a preset file",
    )
    p.add_argument("--data-root", required=True, help="folder holding AutoVI-format data")
    p.add_argument(
        "--out",
        required=True,
        help="experiment folder; must be new or empty (or pass --overwrite)",
    )
    p.add_argument(
        "--engine",
        choices=("simulation", "inprocess"),
        default="simulation",
        help="federated runs as `flwr run` simulations, or through the same "
        "ServerApp/ClientApp code in this process (no Ray, no SuperLink port)",
    )
    add_options(p, (*MODEL_SETTINGS[1:], *CALIBRATION_SETTINGS, "overwrite"))


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "predict",
        "score new images of one category with a model folder: OK/NOK, regions, overlays",
        "fedpatch_app.inspection.predict:run_cli",
    )
    p.add_argument("--model", required=True, help="model folder of a run (RUN/model)")
    p.add_argument("--category", required=True, help="the images' AutoVI category")
    p.add_argument("--out", required=True, help="folder for predictions.csv/.jsonl, overlays/")
    p.add_argument("paths", nargs="+", help="images and/or folders of images")
    p.add_argument(
        "--weights-file",
        default=None,
        help="for a model built with weights=PATH: that file (checked by its SHA-256; "
        "default: none needed for ImageNet or random weights)",
    )
    add_options(p, ("device", "batch_size", "write_maps", "overwrite"))


def _add_settings(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "settings",
        "list every setting (run-config key, default, range, meaning)",
        "fedpatch_app.settings.table:run_cli",
    )
    p.add_argument(
        "--toml",
        action="store_true",
        help="print pyproject.toml's [tool.flwr.app.config] table instead",
    )


COMMANDS = (
    _add_run,
    _add_download,
    _add_synth,
    _add_partition,
    _add_centralized,
    _add_evaluate,
    _add_report,
    _add_experiment,
    _add_predict,
    _add_settings,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedpatch",
        description="Federated PatchCore anomaly detection on AutoVI.",
        formatter_class=Formatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"fedpatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        # FAISS reports at INFO which CPU build it loaded (and that the AVX512 one is
        # missing): normal, but it reads like an error.
        logging.getLogger("faiss").setLevel(logging.WARNING)


def _quiet_stdout() -> None:
    """After a broken pipe (`fedpatch ... | head`), send what is left to nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    seed = getattr(args, "seed", None)
    if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
        parser.error(f"argument --seed: must be >= 0, <= {MAX_SEED}, got {seed}")
    _logging(args.verbose)
    try:
        code = args.func(args)
        sys.stdout.flush()
    except FedpatchError as exc:
        print(f"fedpatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        print(f"fedpatch {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
