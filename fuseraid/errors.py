"""Errors a user sees as one line. Every layer raises subclasses of FuseraidError for
bad input or refused operations; the CLI prints str(err) and exits non-zero."""


class FuseraidError(Exception):
    """A refused operation or bad input, described in one line."""


class SuperblockError(FuseraidError):
    """A member's superblock is missing, corrupt or inconsistent."""


class AssemblyError(FuseraidError):
    """The given members do not form a usable array."""


class MemberIOError(FuseraidError, OSError):
    """An I/O error on one member; carries the member's role/path in its message."""


class GeometryError(FuseraidError):
    """A geometry md cannot express or that does not fit the members."""
