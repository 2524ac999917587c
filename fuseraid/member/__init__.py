"""Member I/O: one member file or block device (device.py)."""

from fuseraid.member.device import Member

__all__ = ["Member"]
