"""The feature backbones PatchCore can use, one module each, with the image loading and
device handling they share. `fedpatch_app.model.backbone` is the entry point that picks one
by name."""
