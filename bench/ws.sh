#!/usr/bin/env bash
# Kept for old habits: the set-up lives in bench/run.sh and bench/paths/.
exec bash "$(dirname "$0")/run.sh" ws "$@"
