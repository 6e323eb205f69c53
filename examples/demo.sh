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
echo
echo "== 5. the whole onboarding story (examples/onboarding.py employee_onboarding): sleep until the"
echo "      start date (2 s here), provision laptop and access as two child workflows, wait for the"
echo "      manager's approval with a reminder every 1.5 s, then the welcome email"
durable run employee_onboarding emp-7 --input '{"start_in": 2, "remind_every": 1.5}' > "$dir/story.log" 2>&1 &
story=$!
tries=0
until durable events emp-7 2>/dev/null | grep -q "waiting for approval"; do
    tries=$((tries + 1))
    [ "$tries" -le 150 ] || { echo "   the story did not reach the approval wait:"; cat "$dir/story.log"; exit 1; }
    sleep 0.2
done
echo "   stage: waiting for approval; the manager approves after a reminder or two"
sleep 2
durable send emp-7 approval --payload '{"approved": true, "by": "manager-1"}' --key approval-emp-7
wait "$story" || exit 1
tail -n 1 "$dir/story.log"
durable status emp-7 | sed -n '/^children/,/^KEY/p' | grep -v '^KEY'
durable events emp-7
echo "== 6. its side effects, each once (the children's keys start with their own ids)"
grep -v '^emp-1/' "$dir/effects.log"
echo "== 7. crash-test a workflow: a SIGKILL at every step boundary (examples/signup.py); the planted"
echo "      bug, an email sent without the step's idempotency key, is found"
if durable verify signup_unsafe; then echo "   verify should have failed"; exit 1; fi
