"""The exceptions that persistence/ raises to its callers."""


class StorageUnavailable(Exception):
    """The database cannot be reached (down, restarting, timing out): retry later."""


class UsernameTaken(Exception):
    """Another account already holds this username (compared by its casefolded key)."""


class AppendFailed(Exception):
    """This one message could not be stored (a data problem); it consumed no seq."""
