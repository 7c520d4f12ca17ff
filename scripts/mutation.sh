#!/usr/bin/env bash
# Mutation testing of the pure core and the verdicts (docs/mutation.md): mutmut 3, one worker, lowest priority.
#   scripts/mutation.sh                  # every module in [tool.mutmut] only_mutate
#   scripts/mutation.sh 'replay.wire.rules.*' # one module (mutmut's mutant-name globs), e.g. after killing a survivor
# Results stay in mutants/ (ignored by git): `mutmut results` lists survivors, `mutmut show NAME` shows one.
# Slow (tens of minutes for all six modules): not part of CI's default path.
set -euo pipefail
cd "$(dirname "$0")/.."
MUTMUT="${MUTMUT:-mutmut}"
if ! command -v "$MUTMUT" >/dev/null 2>&1; then
    MUTMUT="$(dirname "$(command -v python)")/mutmut"
fi
exec nice -n 19 "$MUTMUT" run --max-children "${MUTATION_WORKERS:-1}" "$@"
