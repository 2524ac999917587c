"""Mount options (`-o a,b=c`): parsed and checked before anything is opened, so a typo
is a one-line error and nothing is touched."""

from __future__ import annotations

from dataclasses import dataclass

from fuseraid.errors import FuseraidError

# Generic options mount(8) and fstab pass along that mean nothing to a FUSE image (or
# that mount(8) itself handles); accepted and ignored.
IGNORED = frozenset(
    {
        "defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser",
        "owner", "group", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "async",
        "atime", "noatime", "relatime", "norelatime", "strictatime", "diratime",
        "nodiratime", "lazytime", "nolazytime", "silent", "loud", "default_permissions",
    }
)  # fmt: skip

KNOWN = (
    "ro, rw, allow_other, default_permissions, fsname=NAME, log=FILE, page_cache,"
    " backup_file=FILE"
)


class MountOptionError(FuseraidError):
    """An unknown or malformed mount option."""


@dataclass
class MountOptions:
    readonly: bool = False
    allow_other: bool = False
    fsname: str | None = None
    log: str | None = None  # log file for the detached daemon (default: syslog)
    # Go through the kernel page cache instead of FOPEN_DIRECT_IO (see docs/fuse-front.md).
    page_cache: bool = False
    # The backup file of an in-place reshape: overrides the place the members' reshape
    # note records (fuseraid/migration/note.py); only needed when that note is missing.
    backup_file: str | None = None

    def fuse_options(self, default_fsname: str) -> set[str]:
        """The option set handed to pyfuse3.init / the kernel."""
        fsname = (self.fsname or default_fsname).replace(",", "_")
        opts = {
            "default_permissions",  # the kernel checks the image's mode for us
            "subtype=fuseraid",
            f"fsname={fsname}",
        }
        if self.readonly:
            opts.add("ro")
        if self.allow_other:
            opts.add("allow_other")
        return opts


def parse_options(groups: list[str] | None) -> MountOptions:
    """Parse one or more `-o` strings; an unknown option is a MountOptionError."""
    out = MountOptions()
    for group in groups or []:
        for raw in group.split(","):
            opt = raw.strip()
            if not opt:
                continue
            key, eq, value = opt.partition("=")
            if key == "ro" and not eq:
                out.readonly = True
            elif key == "rw" and not eq:
                out.readonly = False
            elif key == "allow_other" and not eq:
                out.allow_other = True
            elif key == "page_cache" and not eq:
                out.page_cache = True
            elif key == "fsname":
                if not value:
                    raise MountOptionError("mount option fsname needs a value: fsname=NAME")
                out.fsname = value
            elif key == "log":
                if not value:
                    raise MountOptionError("mount option log needs a value: log=FILE")
                out.log = value
            elif key == "backup_file":
                if not value:
                    raise MountOptionError(
                        "mount option backup_file needs a value: backup_file=FILE")
                out.backup_file = value
            elif (opt in IGNORED) or key.startswith("x-") or key == "comment":
                continue
            else:
                raise MountOptionError(f"unknown mount option {opt!r} (known: {KNOWN})")
    return out
