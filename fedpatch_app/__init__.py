"""fedpatch: federated PatchCore anomaly detection on AutoVI with Flower."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedpatch")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
