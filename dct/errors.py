"""User-facing errors. Each message names the bad value and what is accepted, so that bad input fails
before any long work starts (the CLI prints these without a traceback)."""


class DCTError(Exception):
    """Base class of every error the user can fix by changing their input."""


class ConfigError(DCTError, ValueError):
    """A malformed option, spec file or preset."""


class ModelNotFoundError(DCTError, FileNotFoundError):
    """A model folder or hub id that cannot be loaded."""


class ClassifierSpecError(DCTError, ValueError):
    """An unknown or malformed classifier spec."""


class ClassNotFoundError(DCTError, ValueError):
    """A class index out of range or a class name the classifier does not know."""


class UnsafeWeightsError(DCTError):
    """A weights file that would run code when loaded, and the user did not say they trust it."""


class TrainingError(DCTError, RuntimeError):
    """Training cannot go on: a NaN/inf loss, or a token gradient that is zero or not finite."""


class TrainingInterrupted(DCTError):
    """Ctrl-C (SIGINT) during training: what was kept and how to resume is in the message. Exit 130."""

    exit_code = 130
