"""md v1.2 superblock codec (codec.py) and mdadm --examine rendering (examine.py)."""

from fuseraid.superblock.codec import (
    MD_DISK_ROLE_FAULTY,
    MD_DISK_ROLE_JOURNAL,
    MD_DISK_ROLE_SPARE,
    SB_OFFSET,
    Superblock,
    default_data_offset,
    read_member_superblock,
    read_superblock,
    write_superblock,
)

__all__ = [
    "MD_DISK_ROLE_FAULTY",
    "MD_DISK_ROLE_JOURNAL",
    "MD_DISK_ROLE_SPARE",
    "SB_OFFSET",
    "Superblock",
    "default_data_offset",
    "read_member_superblock",
    "read_superblock",
    "write_superblock",
]
