"""The `fedpatch` subcommands as data: name, purpose, the function that runs them, their
own options and the run settings they take (whose options come from the settings schema).

`cli.py` turns this table into the argument parser; each command's work is done by a
`run_cli(args)` in the module that owns it, imported only when the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CATEGORY_HELP = "categories: sub-folder names of the data root (default: all found)"
#: The settings of every command that builds and scores a model.
MODEL_SETTINGS = (
    "categories",
    "backbone",
    "weights",
    "image_size",
    "coreset_ratio",
    "seed",
    "search",
    "search_probe",
    "device",
    "batch_size",
    "num_workers",
)
#: The settings of the thresholds every run calibrates.
CALIBRATION_SETTINGS = (
    "calibration_fraction",
    "calibration_folds",
    "target_false_reject",
    "target_pixel_fpr",
)

Option = tuple[tuple[str, ...], dict[str, Any]]


def opt(*flags: str, **kwargs: Any) -> Option:
    """One argparse argument: its flags and `add_argument` keywords."""
    return flags, kwargs


def out(help_text: str) -> Option:
    return opt("--out", required=True, help=help_text)


def data_root(
    help_text: str = "folder of categories (autovi, mvtec or folder layout: README 'Your own part')",
) -> Option:
    return opt("--data-root", required=True, help=help_text)


CATEGORIES = opt("--categories", nargs="+", help=CATEGORY_HELP)
TRUSTED_KEY = opt(
    "--trusted-key",
    action="append",
    default=None,
    help="public key (PEM) of whoever may sign models; repeat for several. Given, a model folder that is unsigned, signed by another key or changed since it was signed is refused [default: signatures not checked]",
)
SIGNING_KEY = opt(
    "--signing-key",
    default=None,
    help="private key (PEM, Ed25519: scripts/make-model-key.sh) to sign the model folder with [default: $FEDPATCH_MODEL_SIGNING_KEY when set, else unsigned]",
)
RUNTIME = opt(
    "--runtime",
    choices=("auto", "torch", "onnx"),
    default="auto",
    help="torch, or onnx: the model folder's ONNX backbone (fedpatch export) on onnxruntime, no PyTorch needed [default auto: onnx when PyTorch is not installed, else torch]",
)
ALLOW_INCOMPLETE = opt(
    "--allow-incomplete",
    action="store_true",
    help="use a model folder marked incomplete (banks written before the thresholds, e.g. by an interrupted run), with a warning (default: refuse it)",
)


@dataclass(frozen=True)
class Command:
    """A subcommand: its own options, and the settings it takes (options from the schema;
    `flags` gives a setting a shorter option word, e.g. `synth --kind`)."""

    name: str
    help: str
    target: str
    options: tuple[Option, ...] = ()
    settings: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    flags: dict[str, str] = field(default_factory=dict, hash=False)


RUN = Command(
    "run",
    "the main job: a federated run as a Flower simulation, with an honest exit status",
    "fedpatch_app.federated.main_job:run_cli",
    (
        opt(
            "--run-config",
            default=None,
            help='settings as key=value pairs, e.g. "num-clients=3 data-root=data/autovi" (TOML values, as flwr run takes them; a value that is not a TOML number, boolean or quoted string is read as a string; `fedpatch settings` lists them; default: pyproject.toml\'s)',
        ),
        opt(
            "--federation-config",
            default=None,
            help='Flower federation settings, e.g. "client-resources-num-cpus=1" (default: one SuperNode per client, 1 CPU each)',
        ),
        opt(
            "--share-key",
            default=None,
            help="share-mode relay: the federation's share key file, which the simulated SuperNodes read (a deployment's SuperNodes name it in their node config 'share-key') [default: FEDPATCH_SHARE_KEY of the environment]",
        ),
        opt(
            "--flwr-home",
            default=None,
            help="Flower's home folder for this run, where its local SuperLink keeps its state; one run at a time (default: OUT-DIR/.flwr/RUN-NAME, removed when the run completes)",
        ),
    ),
)

DOWNLOAD = Command(
    "download-autovi",
    "download and unpack the AutoVI dataset from Zenodo (resumable, SHA-256 checked)",
    "fedpatch_app.data.download:run_cli",
    (
        opt("--root", required=True, help="folder to unpack the categories into"),
        CATEGORIES,
        opt("--base-url", default=None, help="mirror of the Zenodo files (default: Zenodo)"),
        opt("--keep-zips", action="store_true", help="keep the zip files after unpacking"),
    ),
)

SYNTH = Command(
    "synth",
    "write synthetic data in exactly the AutoVI layout",
    "fedpatch_app.data.synthetic:run_cli",
    (
        out("output root (one folder per category)"),
        opt("--workers", type=int, default=1, help="processes writing images (same bytes)"),
    ),
    ("synthetic_kind", "synthetic_scale", "seed", "categories"),
    flags={"synthetic_kind": "--kind", "synthetic_scale": "--scale"},
)

PARTITION = Command(
    "partition",
    "show how the images are split across federated clients",
    "fedpatch_app.data.partition:run_cli",
    (opt("--json", action="store_true", help="print the partition as JSON"),),
    ("data_root", "partition", "num_clients", "dirichlet_alpha", "seed", "categories", "layout"),
    ("data_root",),
    flags={"partition": "--scheme", "dirichlet_alpha": "--alpha"},
)

CENTRALIZED = Command(
    "centralized",
    "centralized PatchCore baseline: fit, score, evaluate",
    "fedpatch_app.runs.centralized:run_cli",
    (out("run folder to write"), SIGNING_KEY),
    ("data_root", "layout", *MODEL_SETTINGS, *CALIBRATION_SETTINGS, "overwrite"),
    ("data_root",),
)

EVALUATE = Command(
    "evaluate",
    "official AutoVI metrics from exported anomaly maps",
    "fedpatch_app.metrics.evaluate:run_cli",
    (
        opt("--maps", required=True, help="folder holding <category>/test/<defect>/<id>.png"),
        out("folder for results.json"),
    ),
    ("data_root", "categories", "seed"),
    ("data_root",),
)

REPORT = Command(
    "report",
    "Markdown report and plots for one or more run folders",
    "fedpatch_app.reports.report:run_cli",
    (
        opt("runs", nargs="+", help="run folders holding results.json"),
        out("folder for report.md and plots/"),
        opt(
            "--data-root",
            default=None,
            help="AutoVI folder for heatmap overlays (default: the one each run recorded)",
        ),
        opt(
            "--allow-mixed",
            action="store_true",
            help="put runs with different patch features (feature fingerprints) in one report, each tagged with its features (default: refuse them)",
        ),
    ),
)


def _experiment() -> Command:
    from fedpatch_app.experiment.presets import preset_names

    return Command(
        "experiment",
        "run an experiment preset (conf/experiments/*.yaml) and compare its runs",
        "fedpatch_app.experiment.runner:run_cli",
        (
            opt(
                "--preset",
                required=True,
                help=f"a preset name ({', '.join(preset_names())}) or the path of a preset file",
            ),
            data_root(),
            out("experiment folder; must be new or empty (or pass --overwrite)"),
            opt(
                "--engine",
                choices=("simulation", "inprocess"),
                default="simulation",
                help="federated runs as `flwr run` simulations, or through the same ServerApp/ClientApp code in this process (no Ray, no SuperLink port)",
            ),
            SIGNING_KEY,
        ),
        ("layout", *MODEL_SETTINGS[1:], *CALIBRATION_SETTINGS, "dp_public_root", "overwrite"),
    )


PREDICT = Command(
    "predict",
    "score new images of one category with a model folder: OK/NOK, regions, overlays",
    "fedpatch_app.inspection.predict:run_cli",
    (
        opt("--model", required=True, help="model folder of a run (RUN/model)"),
        opt("--category", required=True, help="the images' category (one of the model's)"),
        out("folder for predictions.csv/.jsonl (and overlays/ with --overlays)"),
        opt(
            "--overlays",
            action="store_true",
            help="also write each image with its heatmap and regions to overlays/ (PNG; "
            "off by default: on a CPU line it costs about a third of a light backbone's time)",
        ),
        opt("paths", nargs="+", help="images and/or folders of images"),
        opt(
            "--weights-file",
            default=None,
            help="for a model built with weights=PATH: that file (checked by its SHA-256; default: none needed for ImageNet or random weights)",
        ),
        TRUSTED_KEY,
        ALLOW_INCOMPLETE,
        RUNTIME,
        opt(
            "--search",
            choices=("approximate", "exact"),
            default="approximate",
            help="approximate: each category's search index where the model folder holds one "
            "(the search its thresholds were calibrated with), exact search where it holds "
            "none; exact: always exact (default: approximate)",
        ),
    ),
    ("device", "batch_size", "write_maps", "overwrite"),
)

EXPORT = Command(
    "export",
    "add the ONNX backbone to a model folder, so that line PCs score without PyTorch",
    "fedpatch_app.inspection.onnx_export:run_cli",
    (
        opt("--model", required=True, help="model folder of a run (RUN/model)"),
        opt(
            "--weights-file",
            default=None,
            help="for a model built with weights=PATH: that file (checked by its SHA-256; "
            "default: none needed for ImageNet or random weights)",
        ),
        TRUSTED_KEY,
        SIGNING_KEY,
        ALLOW_INCOMPLETE,
    ),
)

SERVE = Command(
    "serve",
    "the inspection service: an HTTP API for verdicts on images, and a review page",
    "fedpatch_app.inspection.serve:run_cli",
    (
        opt("--model", required=True, help="model folder of a run (RUN/model)"),
        opt("--host", default="127.0.0.1", help="address to listen on"),
        opt("--port", type=int, default=8000, help="TCP port to listen on"),
        opt(
            "--token-file",
            default=None,
            help="file holding a bearer token that every /v1/ request must send [default: none, no token asked]",
        ),
        opt("--max-upload-mb", type=float, default=20.0, help="largest accepted upload, in MB"),
        opt(
            "--scoring-slots",
            type=int,
            default=1,
            help="images scored at once (the CPU threads are shared among them)",
        ),
        opt(
            "--queue",
            type=int,
            default=8,
            help="requests that may wait for a scoring slot (reading their upload or queued); one more gets 503 at once",
        ),
        opt(
            "--upload-timeout",
            type=float,
            default=60.0,
            help="seconds an upload may take in all (and at most 10 s without data): 408 after",
        ),
        opt(
            "--header-timeout",
            type=float,
            default=10.0,
            help="seconds a connection may take to send a request head; closed after",
        ),
        opt(
            "--keep-alive-timeout",
            type=float,
            default=5.0,
            help="seconds an idle keep-alive connection is kept open",
        ),
        opt(
            "--max-requests",
            type=int,
            default=None,
            help="exit after this many requests, for a supervisor to restart [default: no limit]",
        ),
        TRUSTED_KEY,
        ALLOW_INCOMPLETE,
        RUNTIME,
    ),
    ("device",),
)

PRIVACY_AUDIT = Command(
    "privacy-audit",
    "attack what the clients would share, per share mode: feature inversion, membership, and the detector each mode gives (audit.json, audit.md, pictures)",
    "fedpatch_app.privacy.audit:run_cli",
    (
        out("folder for audit.json, audit.md and figures/"),
        opt(
            "--public-root",
            default=None,
            help="folder of the attacker's public images (default: the photographs installed with scikit-image and matplotlib that the synthetic data does not use)",
        ),
        opt(
            "--public-crops",
            type=int,
            default=None,
            help="public crops the inversion model trains on [default: 160]",
        ),
        opt(
            "--training-pairs",
            type=int,
            default=None,
            help="(feature, patch) pairs it trains on [default: 80000]",
        ),
        opt(
            "--epochs",
            type=int,
            default=None,
            help="training epochs of the inversion model [default: 4]",
        ),
        opt("--hidden", type=int, default=None, help="width of the inversion model [default: 512]"),
        opt(
            "--max-rows",
            type=int,
            default=None,
            help="shared rows reconstructed per mode [default: 3000]",
        ),
        opt(
            "--candidates",
            type=int,
            default=None,
            help="member candidates per client and category, as many non-members [default: 8]",
        ),
        opt(
            "--public-pairs",
            type=int,
            default=None,
            help="known pairs of the rotation_public_pairs mode [default: 128]",
        ),
        opt(
            "--projection-dim",
            type=int,
            nargs="+",
            default=None,
            help="dimension(s) of the public subspace of the dp_projection mode; several give "
            "one row each [default: 16]",
        ),
        opt(
            "--curious-client",
            type=int,
            default=None,
            help="partition id of the curious client [default: the last]",
        ),
        opt(
            "--modes",
            nargs="+",
            default=None,
            choices=["raw", "rotation", "rotation_public_pairs", "relay", "dp", "dp_projection"],
            help="share modes to audit [default: all]",
        ),
        opt(
            "--share-key",
            default=None,
            help="share key file of the federation [default: a key derived from the seed, so that the audit is reproducible]",
        ),
    ),
    (
        "data_root",
        *MODEL_SETTINGS,
        "local_oversample",
        "partition",
        "num_clients",
        "dirichlet_alpha",
        "calibration_fraction",
        "dp_epsilon",
        "dp_public_root",
        "overwrite",
    ),
    ("data_root",),
)

SETTINGS = Command(
    "settings",
    "list every setting (run-config key, default, range, meaning)",
    "fedpatch_app.settings.table:run_cli",
    (
        opt(
            "--toml",
            action="store_true",
            help="print pyproject.toml's [tool.flwr.app.config] table instead",
        ),
    ),
)


def commands() -> tuple[Command, ...]:
    return (
        RUN,
        DOWNLOAD,
        SYNTH,
        PARTITION,
        CENTRALIZED,
        EVALUATE,
        REPORT,
        _experiment(),
        PREDICT,
        EXPORT,
        SERVE,
        PRIVACY_AUDIT,
        SETTINGS,
    )
