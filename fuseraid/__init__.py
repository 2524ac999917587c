"""fuseraid: software RAID in user space, Linux md on-disk format, live reshape, FUSE."""

__version__ = "0.1.0"
