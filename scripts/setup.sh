#!/usr/bin/env bash
# The install step: everything building and testing pglock needs, skipping whatever is already
# there (see pglock_setup in scripts/lib.sh). Run it, or source it (scripts/run.sh,
# scripts/test.sh and .ci/run do, through `source scripts/lib.sh; pglock_setup`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pglock_setup
