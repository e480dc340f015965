"""Errors a user can act on, shared by every layer."""


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, the record and the field."""
