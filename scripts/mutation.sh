#!/usr/bin/env bash
# Mutation testing with mutmut (not part of the default test run; see docs/reliability.md).
#   scripts/mutation.sh run ["harness_plugins.methods.icl*"]    then    scripts/mutation.sh results
# mutmut names each mutant after its file's path, and the built-in plugins are imported as
# harness_plugins (the folder plugins/ installed under that name). So mutmut runs in a work
# folder, build/mutation/, where harness_plugins/ is a link to plugins/; what it mutates is
# [tool.mutmut] of pyproject.toml, and it writes only under build/mutation/mutants/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/build/mutation"
mkdir -p "$work"
# what the tests read besides the code ([tool.mutmut] also_copy copies it into mutants/)
for name in harness tests pyproject.toml docs examples configs leaderboards README.md; do
    ln -sfn "$root/$name" "$work/$name"
done
ln -sfn "$root/plugins" "$work/harness_plugins"
cd "$work"
# one thread per test process: a forked copy of a process whose thread pool is running can hang
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HARNESS_PROGRESS=0
exec python -m mutmut "$@"
