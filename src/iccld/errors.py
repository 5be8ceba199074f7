"""User-facing errors.

Anything a user can cause (a missing folder, a bad config value, a corrupt image) raises a subclass
of :class:`ICCLDError` with a one-line message that names the file or field and the fix. The CLI
prints that line and exits with status 2; ``--debug`` shows the traceback instead.
"""

import difflib


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


class MissingExtraError(ICCLDError):
    """An optional feature whose extra is not installed (``pip install 'iccld[EXTRA]'``)."""


def did_you_mean(value: str, choices, cutoff: float = 0.6, show=None) -> str:
    """`` (did you mean 'X'?)`` for the choice X closest to ``value`` (``difflib``'s ratio >= ``cutoff``),
    or "" when none is close; ``show`` maps a choice to what the hint names instead (a leaf key to the
    full key)."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=cutoff)
    if not close:
        return ""
    return f" (did you mean '{show[close[0]] if show is not None else close[0]}'?)"


def one_of(field_name: str, value: str, choices) -> None:
    """ConfigError naming the field, the choices and the closest one, unless ``value`` is a choice."""
    if value not in choices:
        raise ConfigError(f"{field_name}: '{value}' is not one of {', '.join(choices)}{did_you_mean(value, choices)}")
