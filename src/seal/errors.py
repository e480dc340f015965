"""Errors a user can act on, shared by every layer."""


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, the record and the field."""


class LibraryError(ValueError):
    """A memory library that cannot be used as asked: missing, empty, damaged, or holding the document already."""
