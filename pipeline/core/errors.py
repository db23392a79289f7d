"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class CurvlabError(Exception):
    """A problem with the user's input (data, config, environment), reported as one line.

    The message must say what is wrong and what to do, e.g.
    ``"train-images-idx3-ubyte.gz: SHA-256 mismatch (file corrupt?); delete it and rerun to re-download"``.
    """


class DataError(CurvlabError):
    """A missing, truncated, corrupt or mismatching data file."""


class ConfigError(CurvlabError):
    """A config value out of range or inconsistent with the others."""


class NumericalError(CurvlabError):
    """A computation that cannot proceed: a singular covariance, a non-finite result."""


EXIT_USER_ERROR = 2
