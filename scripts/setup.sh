#!/usr/bin/env bash
# Make this checkout runnable on a fresh Debian machine: system packages, a virtualenv,
# the package with its C parity kernel. Idempotent: a second run only checks.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# Debian packages: FUSE itself, the headers pyfuse3 builds against, and the tools the
# tests drive for real (filesystems, fio, mdadm --examine, ISA-L for the benchmarks);
# liburing for the io_uring member writes.
pkgs=(fuse3 libfuse3-dev pkg-config gcc liburing-dev e2fsprogs xfsprogs fio mdadm libisal-dev util-linux xz-utils)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${missing[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    python3 -m venv .venv
fi
stamp=.venv/.fuseraid-installed
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml setup.py csrc fuseraid/parity/_build.py fuseraid/member/_uring_build.py -newer "$stamp" 2>/dev/null | head -n1)" ]; then
    echo "setup: installing fuseraid and its test dependencies into .venv" >&2
    .venv/bin/pip install -q --upgrade pip >&2
    .venv/bin/pip install -q -e ".[test]" >&2
    touch "$stamp"
fi
