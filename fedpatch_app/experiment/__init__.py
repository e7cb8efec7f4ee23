"""`fedpatch experiment`: presets of runs compared on the same data and settings."""

from fedpatch_app.experiment.presets import load_preset
from fedpatch_app.experiment.runner import run_experiment

__all__ = ["load_preset", "run_experiment"]
