#!/usr/bin/env bash
# Try the newest releases of every dependency: install them into a scratch venv (without
# requirements/constraints.txt), list the packages whose version drifted from the pinned set, and
# run the test suite there. Exit status: the test suite's. Not part of CI (it needs the network
# and time); run it before refreshing the pins with scripts/freeze-constraints.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH=${SCRATCH:-.venv-latest}
rm -rf "$SCRATCH"
VENV="$SCRATCH" CONSTRAINTS= bash scripts/install.sh
"$SCRATCH/bin/python" -m pip freeze --exclude-editable --exclude dcrl \
  | sed 's/^torch==\(.*\)+cpu$/torch==\1/' | sort > "$SCRATCH/latest.txt"
grep -v '^#' requirements/constraints.txt | sort > "$SCRATCH/pinned.txt"
echo "== drift (pinned -> latest) =="
awk -F'==' 'NR == FNR { pinned[$1] = $2; next }
             { latest[$1] = $2 }
             END {
               for (name in pinned)
                 if (!(name in latest)) { printf "  %-28s %s -> (gone)\n", name, pinned[name]; n++ }
                 else if (pinned[name] != latest[name]) {
                   printf "  %-28s %s -> %s\n", name, pinned[name], latest[name]; n++ }
               for (name in latest)
                 if (!(name in pinned)) { printf "  %-28s (new) %s\n", name, latest[name]; n++ }
               if (!n) print "  none: the pins are the latest releases"
             }' "$SCRATCH/pinned.txt" "$SCRATCH/latest.txt" | sort
echo "== test suite on the latest versions =="
"$SCRATCH/bin/python" -m pytest
