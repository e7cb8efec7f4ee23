"""The feature backbones PatchCore can use, one module each, with the image loading and
device handling they share. `registry` defines what a backbone provides (`Backbone`) and
lists them; `fedpatch_app.model.backbone` is the entry point that picks one by name."""

from fedpatch_app.model.backbones.registry import Backbone, FeatureNetwork

__all__ = ["Backbone", "FeatureNetwork"]
