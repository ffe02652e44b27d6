#!/usr/bin/env bash
# Render a report page in headless Chromium (Debian package `chromium`) and save a PNG screenshot.
# usage: scripts/screenshot_report.sh REPORT_HTML OUT_PNG [WIDTH,HEIGHT]
# Then open OUT_PNG and check that every figure is drawn (no broken-image icons).
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 REPORT_HTML OUT_PNG [WIDTH,HEIGHT]" >&2
    exit 2
fi
page=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1400,4000}
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
    echo "error: chromium not found (Debian: apt-get install -y chromium)" >&2
    exit 2
fi
[[ -f "$page" ]] || { echo "error: no such page: $1" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: containers usually run as root; the page is a local file with no scripts.
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$profile" --screenshot="$out" --window-size="$size" "file://$page" \
    >/dev/null 2>&1
[[ -s "$out" ]] || { echo "error: chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
