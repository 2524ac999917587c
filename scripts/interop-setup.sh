#!/usr/bin/env bash
# Prepare the Linux-md-under-qemu interop harness (tests/interop): the host tools it
# drives, then the guest (Debian's kernel, busybox-static and mdadm, fetched with
# `apt-get download` and unpacked, never installed) built into the cache.
# Idempotent: a second run only checks. Needs root for apt-get on a fresh machine.
# The cache is tests/interop/.cache, or $FUSERAID_INTEROP_CACHE.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# Host packages: qemu (TCG is enough: no KVM needed), depmod (modules.dep for the guest
# kernel), dpkg-deb/apt-get (present on Debian), ldd (libc-bin), cpio (a test reads the
# initramfs writer's output back), xz (fixtures), python3 (the builder is stdlib only).
pkgs=(qemu-system-x86 kmod cpio xz-utils libc-bin python3)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
updated=
if ((${#missing[@]})); then
    echo "interop-setup: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq >&2
    updated=1
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python

# Already built and current? (the builder's own check; no network needed)
if "$python" -c 'import sys; sys.path.insert(0, "tests/interop"); import mdvm; sys.exit(0 if mdvm.load_image() else 1)'; then
    exit 0
fi

# apt-get download needs package lists: a fresh machine may have none yet.
if [ -z "$updated" ] && ! apt-cache show linux-image-amd64 mdadm busybox-static >/dev/null 2>&1; then
    apt-get update -qq >&2
fi
exec "$python" tests/interop/mdvm.py build
