"""Errors that carry a message for a human; the CLI prints them without a stack trace."""


class StreamflowError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class IngestError(StreamflowError):
    """A month's export cannot be loaded; names the file, line, column and value."""


class GateError(StreamflowError):
    """A month has not passed validation, so nothing downstream may use it."""
