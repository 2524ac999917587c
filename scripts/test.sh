#!/usr/bin/env bash
# Set up (if needed), lint, and run the test suite. Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
bash scripts/interop-setup.sh   # Linux md under qemu: the reference the interop tests compare with
.venv/bin/ruff check fuseraid tests benchmarks
exec .venv/bin/python -m pytest -m "not slow and not interop" "$@"
