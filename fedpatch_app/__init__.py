"""fedpatch: federated PatchCore anomaly detection on AutoVI with Flower."""

__version__ = "0.1.0"
