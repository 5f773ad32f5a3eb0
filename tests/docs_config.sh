#!/usr/bin/env bash
# configs/README.md is what the config table says (regenerate: scripts/gen_config_doc.sh),
# and every shipped config parses and builds its model (--dry-run).
set -uo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
scripts/gen_config_doc.sh "$tmp" || exit 1
diff -u configs/README.md "$tmp" || { echo "FAIL: configs/README.md is stale: run scripts/gen_config_doc.sh"; exit 1; }
for c in configs/*.ini; do
    ./train --config "$c" --dry-run >/dev/null || { echo "FAIL: $c"; exit 1; }
done
echo "docs_config: ok"
