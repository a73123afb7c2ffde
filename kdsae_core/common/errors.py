"""Exceptions whose message tells the user what to do. The CLI prints `str(exc)` as one line."""


class KdsaeError(Exception):
    """Base class: a problem the user can fix; the CLI prints the message and exits 2."""

    exit_code = 2


class InvalidParameter(KdsaeError, ValueError):
    """A parameter is out of range or of the wrong type."""


class BadFile(KdsaeError):
    """A file is missing, malformed, truncated or fails its checksum."""


class MissingData(KdsaeError):
    """Data that must be supplied (reference data, a model, a hub file) is not available offline."""


class RunFolderError(KdsaeError):
    """A run or output folder cannot be used as asked (holds another run, locked, ...)."""
