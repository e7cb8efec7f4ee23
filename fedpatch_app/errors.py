"""Exceptions with messages meant for users: they name the file, client or setting at fault."""


class FedpatchError(Exception):
    """Base class for every error fedpatch reports to a user without a traceback."""


class DataError(FedpatchError):
    """The dataset on disk is missing, malformed or inconsistent."""


class ConfigError(FedpatchError):
    """A setting (CLI flag, run config, YAML) is invalid."""


class ModelError(FedpatchError):
    """Model inputs or saved banks are invalid (wrong dimensions, NaN, fingerprint mismatch)."""


class WeightsError(FedpatchError):
    """Backbone weights cannot be found or loaded."""
