"""`fuseraid mount [-o OPTIONS] [-f] MEMBER... MOUNTPOINT`: assemble and mount the array
as MOUNTPOINT/image; detaches unless -f. Also the body of the `mount.fuseraid` helper that
mount(8) and /etc/fstab call as `mount.fuseraid M1:M2:... DIR [-sfnv] [-o OPTS]`."""

from __future__ import annotations

import argparse
import os
import sys

from fuseraid.errors import FuseraidError
from fuseraid.front.options import KNOWN, parse_options

HELP = f"""mount options (-o, comma separated): {KNOWN}.
Generic fstab options (defaults, noauto, nofail, _netdev, nosuid, nodev, x-*) are ignored."""


def split_spec(spec: str) -> list[str]:
    """mount(8)'s single SPEC 'm1:m2:...' -> member paths (a path that exists as given
    wins, so a member whose name contains ':' still works alone)."""
    if os.path.exists(spec) or ":" not in spec:
        return [spec]
    return [p for p in spec.split(":") if p]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mount",
        help="assemble an array and mount it as MOUNTPOINT/image",
        description="Assemble the array from its members and expose it through FUSE as "
        "one regular file, MOUNTPOINT/image. Detaches once the mount is up unless -f.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", dest="options", action="append", metavar="OPTIONS",
                   help="mount options, comma separated (repeatable)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground and log to stderr")
    p.add_argument("members", nargs="+", metavar="MEMBER",
                   help="member files or block devices (or one M1:M2:... spec)")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fuseraid.front.daemon import mount

    members: list[str] = []
    for m in args.members:
        members += split_spec(m)
    options = parse_options(args.options)
    # The source in /proc/mounts is the members as given, like an fstab spec.
    options.fsname = options.fsname or ":".join(args.members)
    return mount(members, args.mountpoint, options, foreground=args.foreground)


def helper_main(argv: list[str] | None = None) -> int:
    """mount.fuseraid SPEC DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE] (mount(8)'s calling
    convention; -f means fake: check everything, mount nothing)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    positional: list[str] = []
    groups: list[str] = []
    fake = sloppy = False
    i = 0
    try:
        while i < len(argv):
            a = argv[i]
            if a == "-o":
                i += 1
                groups.append(argv[i])
            elif a.startswith("-o") and len(a) > 2:
                groups.append(a[2:])
            elif a in ("-t", "-N"):
                if a == "-N":
                    raise FuseraidError("mount.fuseraid: -N (mount namespaces) is not supported")
                i += 1  # type is fuseraid or fuse.fuseraid: nothing to do
            elif a.startswith("-") and len(a) > 1 and set(a[1:]) <= set("sfnvrw"):
                fake |= "f" in a
                sloppy |= "s" in a
                if "r" in a:
                    groups.append("ro")
                if "w" in a:
                    groups.append("rw")
            elif a.startswith("-"):
                raise FuseraidError(f"mount.fuseraid: unknown flag {a}")
            else:
                positional.append(a)
            i += 1
        if len(positional) != 2:
            raise FuseraidError("usage: mount.fuseraid M1:M2:... MOUNTPOINT [-o OPTIONS]")
        if i > len(argv):
            raise FuseraidError("mount.fuseraid: -o needs a value")
        from fuseraid.front.daemon import check_request, mount

        members = split_spec(positional[0])
        if sloppy:
            groups = [",".join(_known_only(g)) for g in groups]
        options = parse_options(groups)
        # The source in /proc/mounts is the spec itself, so mount(8) (mount -a, umount
        # SPEC) recognises the mount as the fstab line's.
        options.fsname = options.fsname or positional[0]
        if fake:
            check_request(members, positional[1], options)
            return 0
        return mount(members, positional[1], options, foreground=False)
    except IndexError:
        print("fuseraid: mount.fuseraid: -o needs a value", file=sys.stderr)
        return 1
    except FuseraidError as e:
        print(f"fuseraid: {e}", file=sys.stderr)
        return 1


def _known_only(group: str) -> list[str]:
    """-s (sloppy): drop options we do not know instead of failing."""
    out = []
    for opt in group.split(","):
        try:
            parse_options([opt])
        except FuseraidError:
            continue
        out.append(opt)
    return out
