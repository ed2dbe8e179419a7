"""Errors a user can act on. Each message names the problem and the fix in one line; the launcher
prints it without a traceback and exits with status 2."""


class ThesisError(Exception):
    """Base class of the project's user-facing errors."""


class ConfigError(ThesisError):
    """An experiment name, config key or value that does not exist or has the wrong type."""


class DataNotFoundError(ThesisError):
    """A dataset directory or file that is missing; the message names the preparing command."""


class CheckpointError(ThesisError):
    """A checkpoint that is missing, corrupt or made for another architecture."""


class NonFiniteLossError(ThesisError):
    """The training loss became NaN or Inf; the message gives the step."""


class DeviceError(ThesisError):
    """A setting that needs hardware this machine does not have (e.g. a GPU)."""
