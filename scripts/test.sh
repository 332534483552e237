#!/usr/bin/env bash
# The whole test suite, as README.md gives it: installs what the tests need, then runs every test
# of the workspace (unit, conformance against ../shared/conformance, end-to-end on the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests need only the Rust toolchain so far (present on the project's machines). Later issues
# add Debian packages here (installed with apt-get after apt-get update).

cargo test --workspace --all-targets --locked "$@"
