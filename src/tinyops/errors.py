"""The one error root of tinyops.

    TinyopsError                 anything tinyops reports to a user (CLI exit code 1..)
    ├── ProjectError             the project file is malformed or inconsistent
    ├── UsageError               a command was called with arguments that make no sense
    ├── DataError                a data file is missing, unreadable or of the wrong kind
    ├── GateFailed               a quality gate said no (validation, accuracy, agreement)
    │   └── BudgetExceeded       a model does not fit its board's budget
    ├── ModelError               a model or .tflite file cannot be built, read or run
    │   └── UnsupportedOperator  the MCU runtime lacks an operator the model uses
    ├── BundleError              a bundle is malformed, or a file's hash does not match
    │   └── SignatureError       a signature is missing, wrong, or from an unknown key
    └── StoreError               the local store (.tinyops/) is damaged or missing an entry

Each message names what was wrong (the file, the key path, the field) and what was
expected, so that a user can fix it without reading the code.
"""

from __future__ import annotations


class TinyopsError(Exception):
    """Root of every error tinyops reports to a user."""

    exit_code = 1


class ProjectError(TinyopsError):
    """The project file is malformed: names the file, the key path and what was expected."""

    exit_code = 2


class UsageError(TinyopsError):
    """A command-line argument names something that does not exist (a stage, a format)."""

    exit_code = 2


class DataError(TinyopsError):
    """A data source is missing, unreadable, or holds something other than expected."""


class GateFailed(TinyopsError):
    """A quality gate failed. `report` carries the rows a user needs to see."""

    exit_code = 3

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class BudgetExceeded(GateFailed):
    """A model is over its board's RAM, flash, latency or energy budget."""


class ModelError(TinyopsError):
    """A Keras model or .tflite file cannot be built, read or run."""


class UnsupportedOperator(ModelError):
    """The model uses an operator that the microcontroller runtime (TFLM) lacks."""


class BundleError(TinyopsError):
    """A bundle is malformed or one of its files does not match the manifest."""


class SignatureError(BundleError):
    """A signature is missing, does not verify, or comes from an untrusted key."""


class StoreError(TinyopsError):
    """The local store is damaged or lacks an entry that should be there."""
