#!/usr/bin/env bash
# Refresh the tested set: resolve the newest versions into a scratch venv, write constraints.txt,
# reinstall .venv from it, regenerate the README's client x case matrix, and show what changed.
# An upgrade is a reviewed change: read the diff, run the tests, raise pyproject's floors, commit.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --upgrade pip
"$scratch/venv/bin/python" -m pip install --quiet -e '.[dev]'
{
  sed -n '1,/^[^#]/{/^#/p}' constraints.txt
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable
} > "$scratch/constraints.txt"
mv "$scratch/constraints.txt" constraints.txt
python3 -m venv .venv
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
.venv/bin/rtreplay matrix --update README.md
git --no-pager diff --stat -- constraints.txt README.md
git --no-pager diff -- constraints.txt
