"""The error hierarchy of `nas`.

It lives in the base layer (core/) so that every layer can raise it. Every error a user can
cause by what they hand us (a file, a string, a flag) derives from `NasError`; the CLI
turns any `NasError` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class NasError(Exception):
    """Root of every error `nas` raises on purpose. Its message is one line a user can act on."""


class SpaceError(NasError, ValueError):
    """A search space definition is malformed or inconsistent."""


class ArchError(NasError, ValueError):
    """An architecture is malformed or not a member of the space."""


class CheckpointError(NasError):
    """A checkpoint or saved model is missing, truncated, corrupted or for another space."""


class DataError(NasError):
    """A data path or data file cannot be used."""


class BudgetError(NasError, ValueError):
    """A latency budget string cannot be parsed."""


class DeviceError(NasError):
    """A requested device is unknown or not available on this machine."""


class WorkloadError(NasError, ValueError):
    """A workload (batch, sequence length, threads) that cannot be measured."""


class ProfileError(NasError):
    """A stored profile is unreadable, of another format, or for another space/device."""


class StorageError(NasError):
    """A study storage that cannot be opened or does not hold this search's study."""


class ClusterError(NasError):
    """A Ray cluster cannot be reached or started."""


class VerifyError(NasError, ValueError):
    """Verification asked for something it cannot do (one pass, no budget, lengths differ)."""


class NonFiniteLossError(NasError, FloatingPointError):
    """A training step's loss is NaN or infinite: the run diverged, most often because
    the learning rate is too high. Still a `FloatingPointError`, as it was before."""


class ExportError(NasError):
    """A model cannot be exported (ONNX, torch.export), or its export fails its parity check."""
