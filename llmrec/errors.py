"""User-facing errors.

Anything raised as an `LLMRecError` is a problem with the user's input or
environment, not a bug: the CLI prints its message as one line and exits
non-zero, without a traceback. Messages name the file/field and what was
expected, so the user can fix it without reading code.
"""


class LLMRecError(Exception):
    """Base class of the errors the CLI reports as one line."""


class DataError(LLMRecError):
    """A dataset file is missing, malformed or inconsistent."""


class ConfigError(LLMRecError):
    """A config file or option has an unknown key or a bad value."""


class ArtifactError(LLMRecError):
    """A run-directory artifact is missing or does not match what a stage needs."""


class BackendError(LLMRecError):
    """An LLM backend failed in a way retries cannot fix (unknown model, 401, ...)."""
