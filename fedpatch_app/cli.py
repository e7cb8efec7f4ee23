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
from fedpatch_app.commands import Command, commands
from fedpatch_app.errors import FedpatchError
from fedpatch_app.settings.options import add_options
from fedpatch_app.settings.schema import MAX_SEED

log = logging.getLogger("fedpatch")


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


def _add(sub: argparse._SubParsersAction, command: Command) -> None:
    p = sub.add_parser(
        command.name, help=command.help, description=command.help, formatter_class=Formatter
    )
    p.set_defaults(func=_handler(command.target))
    for flags, kwargs in command.options:
        p.add_argument(*flags, **kwargs)
    if command.settings:
        add_options(p, command.settings, required=command.required, flags=command.flags)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedpatch",
        description="Federated PatchCore anomaly detection on AutoVI.",
        formatter_class=Formatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"fedpatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands():
        _add(sub, command)
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
