#!/usr/bin/env bash
# Set up (if needed) and run the demo: member files in a temporary folder, create, mount,
# mkfs, loop-mount, a live reshape under load, verify, clean up.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
exec .venv/bin/fuseraid demo "$@"
