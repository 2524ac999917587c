"""The qemu/md harness itself: pure parts (cpio writer, vmlinux extraction, module
ordering, case table) without a guest, and one cheap boot that proves output, exit
status and disk writes cross the guest boundary."""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import mdcases as mc
import mdvm
import pytest


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_cpio_archive_lists_and_extracts(tmp_path: Path) -> None:
    c = mdvm.Cpio()
    c.file("a/b/c.txt", b"hello\n", 0o644)
    c.symlink("a/link", "b/c.txt")
    c.file("x", b"")
    data = c.finish()
    assert len(data) % 4 == 0
    out = subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=tmp_path,
                         capture_output=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a/b/c.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "a/link").is_symlink()
    assert (tmp_path / "a/link").read_bytes() == b"hello\n"
    assert (tmp_path / "x").read_bytes() == b""


def test_extract_vmlinux_finds_the_elf_after_false_magics() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    # a decoy xz stream that is not an ELF, then the real one, inside junk
    decoy = lzma.compress(b"not a kernel", format=lzma.FORMAT_XZ)
    bz = b"MZ" + b"\0" * 500 + decoy + b"\xfd7zXZ\x00broken" + lzma.compress(elf) + b"\0" * 99
    assert mdvm.extract_vmlinux(bz) == elf
    assert mdvm.extract_vmlinux(b"MZ" + b"\0" * 100 + decoy) is None


def test_module_order_puts_dependencies_and_softdeps_first(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/md/raid456.ko: kernel/lib/raid6_pq.ko kernel/lib/libcrc32c.ko "
        "kernel/md/md-mod.ko\n"
        "kernel/md/md-mod.ko:\nkernel/lib/raid6_pq.ko:\nkernel/lib/libcrc32c.ko:\n"
        "kernel/crypto/crc32c_generic.ko:\nkernel/md/raid1.ko: kernel/md/md-mod.ko\n"
    )
    (tmp_path / "modules.softdep").write_text("softdep libcrc32c pre: crc32c\n")
    (tmp_path / "modules.alias").write_text("alias crc32c crc32c_generic\n")
    (tmp_path / "modules.builtin").write_text("kernel/drivers/block/virtio_blk.ko\n")
    order = mdvm._module_order(tmp_path, ["virtio_blk", "raid456", "raid1"])
    names = [mdvm._modname(m) for m in order]
    assert names == ["md_mod", "crc32c_generic", "libcrc32c", "raid6_pq", "raid456", "raid1"]
    with pytest.raises(mdvm.MdVmError, match="no module nosuch"):
        mdvm._module_order(tmp_path, ["nosuch"])


@pytest.mark.parametrize(
    ("name", "number"), [("n2", 0x102), ("f2", 0x201), ("o2", 0x10201), ("n3", 0x103)]
)
def test_raid10_layout_numbers_match_md(name: str, number: int) -> None:
    assert mc.raid10_layout(name) == number


def test_batches_respect_the_disk_limit_and_keep_every_case() -> None:
    groups = mc.batches(mc.MATRIX, max_disks=12)
    assert [c for g in groups for c in g] == mc.MATRIX
    assert all(sum(len(c.present_roles) for c in g) <= 12 for g in groups)


def test_mdadm_create_puts_missing_in_its_role() -> None:
    case = mc.Case("x", 5, 4, "left-symmetric", 64, missing=(2,))
    cmd = case.mdadm_create("/dev/md0", ["/dev/vdb", "/dev/vdc", "/dev/vdd"])
    assert cmd.endswith("/dev/vdb /dev/vdc missing /dev/vdd")
    assert "--layout=left-symmetric" in cmd and "--chunk=64" in cmd


def test_parse_reports() -> None:
    out = "noise\n@@CASE a size=42\n@@DETAIL a      Raid Level : raid5\n@@CASE a rc=0\n"
    rep = mc.parse_reports(out)["a"]
    assert rep.values == {"size": "42", "rc": "0"}
    assert rep.detail_field("Raid Level") == "raid5"
    assert rep.detail_field("Layout") is None


@pytest.mark.interop_smoke
def test_guest_job_output_status_and_disk_writes(md_image, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (1 << 20))
    script = (
        "echo out-$(cat /proc/mdstat | grep -c raid6)\n"
        "echo err >&2\n"
        "echo $DISKS\n"
        "printf guest-wrote | dd of=/dev/vda bs=512 seek=8 conv=notrunc 2>/dev/null\n"
        "exit 7\n"
    )
    res = mdvm.run_md_job([disk], script, image=md_image, timeout=300)
    assert res.status == 7
    assert res.output.splitlines() == ["out-1", "err", "/dev/vda"]
    assert disk.read_bytes()[4096:4096 + 11] == b"guest-wrote"


@pytest.mark.interop_smoke
def test_a_failing_command_ends_the_job_with_its_status(md_image) -> None:
    res = mdvm.run_md_job([], "false\necho not-reached\n", image=md_image)
    assert res.status == 1 and "not-reached" not in res.output


@pytest.mark.interop_smoke
def test_a_corrupted_member_shows_in_sha_and_mismatch_cnt(md_image, tmp_path: Path) -> None:
    """The checks the matrix relies on can fail: md fills a raid5, the guest then
    overwrites a few bytes in one member's data area behind md's back, and md's own
    report must show both a wrong SHA-256 and a non-zero mismatch_cnt."""
    from pattern import sha256_of
    from runners import write_payload

    case = mc.Case("corrupt", 5, 3, "left-symmetric", 64)
    disks = [write_payload(tmp_path / "payload.img", 8 << 20)]
    disks += mc.make_members(case, tmp_path / "m")
    fill = mc.create_and_fill_script([case], "/dev/vda", 1)
    body = [
        "mdadm --stop /dev/md0 2>/dev/null || true",
        "off=$(mdadm --examine /dev/vdc | sed -n 's/.*Data Offset : \\([0-9]*\\) sectors.*/\\1/p')",
        "printf 'XXXXXXXX' | dd of=/dev/vdc bs=512 seek=$((off + 8)) conv=notrunc 2>/dev/null",
        "sync",
        "mdadm --assemble /dev/md0 --run /dev/vdb /dev/vdc /dev/vdd",
        "md_report after md0 check",
    ]
    res = mdvm.run_md_job(disks, fill + mc.job([("after", body)]), image=md_image,
                          timeout=600)
    reports = mc.parse_reports(res.output)
    before, after = reports["corrupt"].values, reports["after"].values
    expected = sha256_of(mc.SEED, int(before["size"]))
    assert before["sha256"] == expected and before["mismatch_cnt"] == "0", res.output
    assert after["rc"] == "0", res.output
    assert after["sha256"] != expected
    assert after["last_sync"] == "check"
    assert int(after["mismatch_cnt"]) > 0
