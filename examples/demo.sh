#!/bin/sh
# Run the onboarding workflow, crash it mid-way with SIGKILL, resume it, and show
# that every side effect happened exactly once. Uses a fresh database folder.
set -u
dir=$(mktemp -d)
export DURABLE_DB="$dir/durable.db"
echo "== database: $DURABLE_DB"
echo "== 1. run onboarding emp-1; the process SIGKILLs itself before provision_access runs"
durable run onboarding emp-1 --crash-at provision_access:before
echo "   (exit status $? = killed)"
echo "== 2. run the same command again: recorded steps are replayed, the rest run"
durable run onboarding emp-1 || exit 1
echo "== 3. the step table"
durable steps emp-1
echo "== 4. side effects, one line per step (effects.log beside the database)"
cat "$dir/effects.log"
