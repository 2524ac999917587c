"""Linux md under qemu: build (and cache) a Debian kernel plus a tiny initramfs, boot it
with member image files as virtio disks, run a shell job in the guest, return its output.

Standard library only, so `python3 tests/interop/mdvm.py build` works before any venv
exists (scripts/interop-setup.sh calls it).

Design:
- The kernel, mdadm and busybox come from Debian's package archive via `apt-get
  download` and are unpacked with `dpkg-deb -x`: nothing is installed on the host.
- qemu boots the *uncompressed* vmlinux through its PVH entry (extracted from the
  bzImage here), which skips the decompressor: under TCG that is most of the boot time.
- The base initramfs (busybox, mdadm and its shared libraries, md and virtio modules in
  dependency order) is cached; each job appends a second small cpio archive holding the
  job script (the kernel unpacks concatenated archives in order).
- Disks appear in the guest as /dev/vda, /dev/vdb, ... in the order given. The job's
  stdout/stderr go to the second serial port (a host file, free of kernel messages);
  the console (first port) goes to another file, kept for error reports.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import re
import shlex
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache"
FORMAT_VERSION = 5  # bump when the initramfs contents or layout change

EXIT_MARK = "@@FUSERAID-JOB-EXIT "
START_MARK = "@@FUSERAID-JOB-START"

# Modules the guest needs, loaded in dependency order; softdeps ("pre:") are added too.
ROOT_MODULES = ["virtio_pci", "virtio_blk", "raid0", "raid1", "raid10", "raid456", "loop"]
# Non-modular kernels may have these built in; a module missing from modules.dep and
# present in modules.builtin is simply skipped.

LIB_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64"]


class MdVmError(RuntimeError):
    """The harness itself failed (build, boot, timeout): not a test verdict."""


def cache_dir() -> Path:
    return Path(os.environ.get("FUSERAID_INTEROP_CACHE", str(DEFAULT_CACHE)))


@dataclass(frozen=True)
class Image:
    """A built guest: uncompressed kernel (or bzImage as fallback) and base initramfs."""

    kernel: Path
    initramfs: Path
    info: dict

    @property
    def kernel_version(self) -> str:
        return self.info["kernel_release"]

    @property
    def mdadm_version(self) -> str:
        return self.info["mdadm_version"]


# --------------------------------------------------------------------------- build


def _run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MdVmError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _apt_download(package: str, dest: Path) -> Path:
    """Fetch one .deb into dest with apt's ordinary client; returns its path."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o777)  # lets apt drop privileges to _apt instead of warning
    before = set(dest.glob("*.deb"))
    _run(["apt-get", "download", "-q", package], cwd=dest)
    new = sorted(set(dest.glob("*.deb")) - before) or sorted(dest.glob(f"{package}_*.deb"))
    if not new:
        raise MdVmError(f"apt-get download {package} produced no .deb")
    return new[-1]


def _deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), field]).strip()


def _lib_depends(deb: Path) -> list[str]:
    """The lib* packages a .deb depends on, libc6 excepted (the host always has it)."""
    names = []
    for alt in _deb_field(deb, "Depends").split(","):
        name = alt.split("|")[0].split("(")[0].strip()
        if name.startswith("lib") and name != "libc6":
            names.append(name)
    return names


def _kernel_package(work: Path) -> Path:
    """Debian's linux-image-amd64 is a metapackage: follow its Depends to the image."""
    meta = _apt_download("linux-image-amd64", work / "debs")
    for alt in _deb_field(meta, "Depends").split(","):
        name = alt.split("|")[0].split("(")[0].strip()
        if name.startswith("linux-image-"):
            return _apt_download(name, work / "debs")
    raise MdVmError("linux-image-amd64 does not depend on a linux-image-* package")


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF vmlinux inside a bzImage: try every gzip/xz/zstd magic in order and keep
    the first that decompresses to an ELF file."""
    magics = [(b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd")]
    for magic, kind in magics:
        start = bzimage.find(magic)
        while start >= 0:
            out = _decompress(kind, bzimage[start:])
            if out is not None and out[:4] == b"\x7fELF":
                return out
            start = bzimage.find(magic, start + 1)
    return None


def _decompress(kind: str, data: bytes) -> bytes | None:
    try:
        if kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if kind == "gzip":
            return zlib.decompressobj(wbits=31).decompress(data)
        if shutil.which("zstd"):  # no zstd in the 3.11 standard library
            proc = subprocess.run(["zstd", "-dc"], input=data, capture_output=True)
            return proc.stdout or None
    except (lzma.LZMAError, zlib.error):
        return None
    return None


def has_pvh_note(elf: bytes) -> bool:
    """True when the ELF carries XEN_ELFNOTE_PHYS32_ENTRY (qemu then boots it via PVH)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _module_order(moddir: Path, roots: Sequence[str]) -> list[str]:
    """Relative .ko paths to insmod, dependencies first (modules.dep, plus softdeps
    resolved through modules.alias)."""
    dep: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, deps = line.partition(":")
        dep[mod] = deps.split()
        by_name[_modname(mod)] = mod
    aliases: dict[str, list[str]] = {}
    alias_file = moddir / "modules.alias"
    if alias_file.exists():
        for line in alias_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias":
                aliases.setdefault(parts[1], []).append(parts[2])
    soft: dict[str, list[str]] = {}
    soft_file = moddir / "modules.softdep"
    if soft_file.exists():
        for line in soft_file.read_text().splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[0] == "softdep" and parts[2] == "pre:":
                soft[parts[1]] = parts[3:]

    def resolve(name: str) -> list[str]:
        name = name.replace("-", "_")
        if name in by_name:
            return [by_name[name]]
        return [by_name[a.replace("-", "_")] for a in aliases.get(name, [])
                if a.replace("-", "_") in by_name]

    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for s in soft.get(_modname(mod), []):
            for m in resolve(s):
                visit(m)
        for d in reversed(dep[mod]):  # modules.dep lists the deepest dependency last
            visit(d)
        order.append(mod)

    builtin_file = moddir / "modules.builtin"
    builtin = builtin_file.read_text() if builtin_file.exists() else ""
    for root in roots:
        found = resolve(root)
        if not found:
            if f"/{root}.ko" in builtin or f"/{root.replace('_', '-')}.ko" in builtin:
                continue
            raise MdVmError(f"kernel has no module {root}")
        for m in found:
            visit(m)
    return order


def _modname(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko")[0].replace("-", "_")


def _shared_libs(binary: Path, root: Path) -> list[Path]:
    """Shared libraries a dynamically linked binary needs: those unpacked under root
    first (the binary's own library packages), then the host's (libc, the loader)."""
    search = ":".join(str(root / d.lstrip("/")) for d in LIB_DIRS)
    env = dict(os.environ, LD_LIBRARY_PATH=search)
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env)
    if proc.returncode != 0 or "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    libs = []
    for line in proc.stdout.splitlines():
        if "not found" in line:
            raise MdVmError(f"{binary.name} needs a library that is missing: {line.strip()}")
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


class Cpio:
    """A newc cpio archive writer (what the kernel's initramfs unpacker reads)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.ino = 1
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0)
        )
        self.ino += 1
        self.buf += hdr.encode() + name_b
        self.buf += b"\0" * (-len(self.buf) % 4)
        self.buf += data
        self.buf += b"\0" * (-len(self.buf) % 4)

    def mkdir(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755)

    def file(self, path: str, data: bytes, mode: int = 0o755) -> None:
        path = path.strip("/")
        if "/" in path:
            self.mkdir(path.rsplit("/", 1)[0])
        self._entry(path, stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        if "/" in path:
            self.mkdir(path.rsplit("/", 1)[0])
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.buf)


INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run/mdadm /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /etc/modules.order); do
    insmod "/lib/modules/$m" 2>/dev/null || true
done
set -a; . /job.env; set +a
# virtio disks probe asynchronously: wait until all of them are there
i=0
while [ "$(ls /sys/block | grep -c '^vd')" -lt "$NDISKS" ] && [ $i -lt 200 ]; do
    sleep 0.05; i=$((i+1))
done
stty -F /dev/ttyS1 raw -echo 2>/dev/null
echo "@@FUSERAID-JOB-START" > /dev/ttyS1
(cd /tmp && sh -e /job.sh) > /dev/ttyS1 2>&1
rc=$?
mdadm --stop --scan > /dev/null 2>&1
sync
echo "@@FUSERAID-JOB-EXIT $rc" > /dev/ttyS1
poweroff -f
"""

# mdadm 4.2 crashes in its fork fallback when it wants to continue a reshape without
# systemd (fixed in 4.3); this stand-in makes "systemctl start mdadm-grow-continue@X"
# (and "restart ...", which mdadm 4.2's --grow uses) run the continuation in the
# background the way the systemd unit would.
SYSTEMCTL = r"""#!/bin/sh
echo "systemctl $*" >> /run/systemctl.log
case "$1 $2" in
"start mdadm-grow-continue@"*|"restart mdadm-grow-continue@"*)
    dev=${2#mdadm-grow-continue@}; dev=${dev%.service}
    mdadm --grow --continue "/dev/$dev" > /dev/null 2>&1 < /dev/null &
    exit 0 ;;
esac
exit 0
"""


def build(
    cache: Path | None = None, *, force: bool = False, log: Callable[[str], None] = print
) -> Image:
    """Fetch Debian's kernel, busybox-static and mdadm and build the guest into cache.
    Idempotent: returns the cached image when it is complete and current."""
    cache = cache or cache_dir()
    if not force:
        img = load_image(cache)
        if img is not None:
            return img
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mdvm-build-", dir=cache) as tmp:
        work = Path(tmp)
        log("interop: downloading Debian packages (kernel, busybox-static, mdadm)")
        kdeb = _kernel_package(work)
        bbdeb = _apt_download("busybox-static", work / "debs")
        mddeb = _apt_download("mdadm", work / "debs")
        # mdadm's shared libraries besides libc (libudev1): from the archive too, so the
        # host needs none of them installed
        libdebs = [_apt_download(name, work / "debs") for name in _lib_depends(mddeb)]
        root = work / "root"
        for deb in (kdeb, bbdeb, mddeb, *libdebs):
            _run(["dpkg-deb", "-x", str(deb), str(root)])
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise MdVmError(f"{kdeb.name} has no /boot/vmlinuz-*")
        release = vmlinuz[-1].name[len("vmlinuz-"):]
        moddir = root / "lib" / "modules" / release
        # The .deb ships no modules.dep (postinst makes it): generate it in the tree.
        _run(["depmod", "-b", str(root), release])

        bz = vmlinuz[-1].read_bytes()
        elf = extract_vmlinux(bz)
        if elf is not None and has_pvh_note(elf):
            kernel_bytes, kernel_kind = elf, "vmlinux-pvh"
        else:  # slower decompressing boot, but it works
            kernel_bytes, kernel_kind = bz, "bzImage"

        cpio = Cpio()
        for d in ("proc", "sys", "dev", "tmp", "run", "bin", "sbin", "etc", "root"):
            cpio.mkdir(d)
        busybox = root / "bin" / "busybox"
        cpio.file("bin/busybox", busybox.read_bytes())
        cpio.symlink("bin/sh", "busybox")
        mdadm = root / "sbin" / "mdadm"
        cpio.file("sbin/mdadm", mdadm.read_bytes())
        seen: set[str] = set()
        for lib in _shared_libs(mdadm, root):
            real = lib.resolve()
            # the guest path is the host path, minus the unpack root where it came from
            guest = "/" + str(lib.relative_to(root)) if lib.is_relative_to(root) else str(lib)
            guest_dir = guest.rsplit("/", 1)[0]
            for name in {guest, f"{guest_dir}/{real.name}"}:
                if name not in seen:
                    seen.add(name)
                    cpio.file(name, real.read_bytes())
        cpio.file("etc/mdadm/mdadm.conf", b"HOMEHOST <ignore>\n", 0o644)
        order = _module_order(moddir, ROOT_MODULES)
        for rel in order:
            cpio.file(f"lib/modules/{rel}", (moddir / rel).read_bytes(), 0o644)
        cpio.file("etc/modules.order", "\n".join(order).encode() + b"\n", 0o644)

        info = {
            "format": FORMAT_VERSION,
            "kernel_package": f"{_deb_field(kdeb, 'Package')} {_deb_field(kdeb, 'Version')}",
            "kernel_release": release,
            "kernel_kind": kernel_kind,
            "mdadm_version": _deb_field(mddeb, "Version"),
            "busybox_version": _deb_field(bbdeb, "Version"),
            "modules": [_modname(m) for m in order],
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        # whole files renamed into place, info.json last: a concurrent reader sees the
        # old image or the new one, never a mix
        for fname, data in (("kernel", kernel_bytes), ("initramfs.cpio", cpio.finish()),
                            ("info.json", (json.dumps(info, indent=1) + "\n").encode())):
            (work / fname).write_bytes(data)
            os.replace(work / fname, cache / fname)
        log(f"interop: built {info['kernel_package']} ({kernel_kind}), mdadm "
            f"{info['mdadm_version']} into {cache}")
    img = load_image(cache)
    assert img is not None
    return img


def load_image(cache: Path | None = None) -> Image | None:
    cache = cache or cache_dir()
    try:
        info = json.loads((cache / "info.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initramfs = cache / "kernel", cache / "initramfs.cpio"
    if info.get("format") != FORMAT_VERSION or not kernel.exists() or not initramfs.exists():
        return None
    return Image(kernel, initramfs, info)


# --------------------------------------------------------------------------- run


@dataclass(frozen=True)
class JobResult:
    status: int  # the job script's exit status
    output: str  # its stdout and stderr, interleaved, "\r" removed
    console: str  # kernel console (for diagnosis)

    def check(self) -> str:
        """The output, or MdVmError when the job failed."""
        if self.status != 0:
            raise MdVmError(f"guest job exited {self.status}:\n{self.output[-4000:]}")
        return self.output


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64")


def run_md_job(
    disks: Sequence[Path | str],
    script: str,
    *,
    timeout: float = 300.0,
    memory_mib: int = 384,
    image: Image | None = None,
    readonly: Sequence[bool] | None = None,
) -> JobResult:
    """Boot the guest with `disks` as /dev/vda, /dev/vdb, ... (raw, in this order), run
    `script` with `sh -e` in /tmp, and return its exit status and output.

    The guest has busybox, mdadm and the md modules loaded. `$DISKS` holds the disk
    device names in order. Arrays still running at the end are stopped with mdadm
    (so superblocks are written clean) before the guest powers off."""
    image = image or load_image() or build()
    qemu = qemu_binary()
    if qemu is None:
        raise MdVmError("qemu-system-x86_64 is not installed (run scripts/interop-setup.sh)")
    disks = [Path(d) for d in disks]
    if len(disks) > 26:
        raise MdVmError(f"at most 26 disks per guest, got {len(disks)}")
    names = [f"/dev/vd{chr(ord('a') + i)}" for i in range(len(disks))]
    ro = list(readonly) if readonly is not None else [False] * len(disks)
    with tempfile.TemporaryDirectory(prefix="mdvm-job-") as tmp:
        t = Path(tmp)
        job = Cpio()
        # init and the stand-ins travel with each job, so changing them needs no rebuild
        job.file("init", INIT.encode())
        job.file("bin/systemctl", SYSTEMCTL.encode())
        job.file("job.sh", script.encode())
        env = f"NDISKS={len(disks)}\nDISKS={shlex.quote(' '.join(names))}\n"
        job.file("job.env", env.encode(), 0o644)
        initrd = t / "initrd"
        with open(initrd, "wb") as f, open(image.initramfs, "rb") as base:
            shutil.copyfileobj(base, f, 1 << 20)
            f.write(job.finish())
        console, out = t / "console.log", t / "job.log"
        cmd = [
            qemu, "-accel", "tcg", "-machine", "pc", "-cpu", "max", "-smp", "1",
            "-m", str(memory_mib), "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-serial", f"file:{console}", "-serial", f"file:{out}",
            "-kernel", str(image.kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 loglevel=4 panic=-1 quiet rdinit=/init "
            "random.trust_cpu=on",
        ]  # fmt: skip
        for d, r in zip(disks, ro, strict=True):
            opt = f"file={d},format=raw,if=virtio,cache=unsafe"
            cmd += ["-drive", opt + (",readonly=on" if r else "")]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            qemu_out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MdVmError(
                f"guest timed out after {timeout:.0f}s; job output:\n"
                f"{_read(out)[-3000:]}\nconsole:\n{_read(console)[-3000:]}"
            ) from None
        finally:  # never leave a qemu behind (timeout, ^C, any error)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        text, cons = _read(out), _read(console)
    start = text.find(START_MARK)
    body = text[start + len(START_MARK) + 1:] if start >= 0 else text
    m = re.search(re.escape(EXIT_MARK) + r"(\d+)", body)
    if m is None:
        raise MdVmError(
            f"guest ended without an exit marker (qemu status {proc.returncode}):\n"
            f"{qemu_out.decode(errors='replace')[-2000:]}\njob output:\n{body[-3000:]}\n"
            f"console:\n{cons[-3000:]}"
        )
    return JobResult(int(m.group(1)), body[: m.start()], cons)


def _read(p: Path) -> str:
    try:
        return p.read_bytes().decode(errors="replace").replace("\r", "")
    except OSError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fetch and build the guest into the cache (idempotent)")
    b.add_argument("--force", action="store_true")
    r = sub.add_parser("run", help="run a job script in the guest with the given disks")
    r.add_argument("script", help="shell script file ('-' for stdin)")
    r.add_argument("disks", nargs="*")
    r.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            build(force=args.force, log=lambda s: print(s, file=sys.stderr))
            return 0
        text = sys.stdin.read() if args.script == "-" else Path(args.script).read_text()
        res = run_md_job(args.disks, text, timeout=args.timeout)
        sys.stdout.write(res.output)
        return res.status
    except MdVmError as e:
        print(f"mdvm: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
