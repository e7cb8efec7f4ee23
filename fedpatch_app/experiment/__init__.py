"""`fedpatch experiment`: presets of runs compared on the same data and settings.

`run_experiment` lives in `fedpatch_app.experiment.runner`; it is not imported here, so
that reading the preset names (every `fedpatch` command's help does) never imports torch.
"""

from fedpatch_app.experiment.presets import load_preset

__all__ = ["load_preset"]
