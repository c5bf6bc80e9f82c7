#!/usr/bin/env bash
# Submit every stage of a pipeline config as SLURM jobs chained with --dependency=afterok (a failed stage cancels
# the ones after it). With --wait, follow the jobs and say which stage failed and where its log is.
#   slurm/submit_pipeline.sh CONFIG.yaml [--wait] [--stages caption dataset ...]
set -euo pipefail
config=${1:?usage: slurm/submit_pipeline.sh CONFIG.yaml [--wait]}; shift
cd "$(dirname "$0")/.."
exec python -m text_to_face.cli pipeline "$config" --slurm "$@"
