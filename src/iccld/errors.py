"""User-facing errors.

Anything a user can cause (a missing folder, a bad config value, a corrupt image) raises a subclass
of :class:`ICCLDError` with a one-line message that names the file or field and the fix. The CLI
prints that line and exits with status 2; ``--debug`` shows the traceback instead.
"""


class ICCLDError(Exception):
    """Base class for errors whose message is meant for the user, not a traceback."""

    exit_code = 2


class ConfigError(ICCLDError):
    """An unknown key, a value of the wrong type or an impossible value in a config."""


class DataError(ICCLDError):
    """A missing dataset root, a wrong layout, an unreadable file or an unmapped label value."""


class CheckpointError(ICCLDError):
    """A checkpoint that is missing, unreadable or from a different architecture."""


class TrainingError(ICCLDError):
    """A run that cannot continue: a non-finite loss, a run folder that would be overwritten."""


class DependencyError(ICCLDError):
    """An optional package that a feature needs is not installed (the message names the extra)."""
