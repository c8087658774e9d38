#!/bin/sh
# Print the x86_64 number of move_phys_pages. The kernel patch is the only
# place the number is written down: this reads it from the syscall_64.tbl
# hunk of the series' wiring patch (default series: v1).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
patch="$here/patches/${1:-v1}/0002-syscalls-wire-up-move_phys_pages.patch"
[ -f "$patch" ] || { echo "syscall-nr: no such patch: $patch" >&2; exit 1; }
nr=$(sed -n '/^+++ b\/arch\/x86\/entry\/syscalls\/syscall_64.tbl$/,/^diff /s/^+\([0-9][0-9]*\)[[:space:]][[:space:]]*common[[:space:]][[:space:]]*move_phys_pages[[:space:]].*/\1/p' "$patch")
[ -n "$nr" ] || { echo "syscall-nr: no move_phys_pages line in $patch" >&2; exit 1; }
echo "$nr"
