"""Exceptions raised by dreamsr.

Library code never prints or exits; it raises a :class:`DreamSRError` subclass whose message is one
sentence a user can act on. The CLI turns it into one red line and a non-zero exit code.
"""

from __future__ import annotations


class DreamSRError(Exception):
    """Base class of every error dreamsr raises on purpose."""


class ConfigError(DreamSRError, ValueError):
    """An option or configuration value is out of range or inconsistent."""


class InputError(DreamSRError):
    """An input file or tensor cannot be used (unreadable, wrong size, wrong mode...)."""


class CheckpointError(DreamSRError):
    """A checkpoint file is not a valid dreamsr checkpoint (missing/mismatched tensor, bad metadata)."""


class OutputError(DreamSRError):
    """An output file cannot be written (missing or read-only folder, disk full, unencodable, one of the
    command's own inputs)."""


class OutputExistsError(OutputError, FileExistsError):
    """The output file exists and replacing it was not asked for."""


class SamplingError(DreamSRError):
    """Sampling produced values that are no image (NaN or inf): nothing is written."""


class ModelNotFoundError(DreamSRError):
    """No model could be resolved from the given name, path or URL."""


class DownloadError(DreamSRError):
    """A download failed, or a downloaded file did not verify."""


class DatasetError(DreamSRError):
    """A data set is missing or laid out differently from what was expected."""


class TrainingError(DreamSRError):
    """Training had to stop (NaN/inf loss, incompatible resume...)."""
