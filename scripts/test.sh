#!/usr/bin/env bash
# The whole test suite, as README.md gives it: installs what the tests need, then runs every test
# of the workspace (unit, conformance against ../shared/conformance, end-to-end on the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."

# Besides the Rust toolchain (present on the project's machines), the tests drive real tools
# from Debian's packages.
scripts/install-test-deps.sh

cargo test --workspace --all-targets --locked "$@"
