#!/bin/sh
# Run the onboarding workflow, crash it mid-way with SIGKILL, resume it, and show what
# happened: recorded steps are replayed, interrupted ones run again (steps are
# at-least-once), and each side effect still happened once because examples/effects.py
# deduplicates it by the step's idempotency key. Uses a fresh database folder.
set -u
dir=$(mktemp -d)
export DURABLE_DB="$dir/durable.db"
echo "== database: $DURABLE_DB"
echo "== 1. run onboarding emp-1; the process SIGKILLs itself just before provision_access runs"
echo "      (provision_laptop, its parallel sibling, runs in another thread: it may finish first, or not)"
durable run onboarding emp-1 --crash-at provision_access:before
echo "   (exit status $? = killed)"
echo "== 2. run the same command again: steps with a recorded result are replayed, not run again;"
echo "      provision_access was interrupted (its RUNNING row, attempt 1, has no result), so it runs"
echo "      again as attempt 2 - and so does provision_laptop if the kill interrupted it too"
durable run onboarding emp-1 || exit 1
echo "== 3. the step table: ATTEMPTS 2 on the steps the crash interrupted"
durable steps emp-1
echo "== 4. side effects (effects.log beside the database): one line per step, because a second"
echo "      delivery with the same idempotency key is not performed again"
cat "$dir/effects.log"
