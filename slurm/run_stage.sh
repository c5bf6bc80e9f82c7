#!/usr/bin/env bash
# Run one stage notebook headless with papermill, as every stage job does:
#   slurm/run_stage.sh NOTEBOOK RUN [PARAMS.yaml] [papermill options, e.g. -p size 512]
# The executed notebook (the stage's report) goes to RUN/notebooks/ and its log to RUN/logs/, named with the job id
# (and the array task id), so a resubmitted job never overwrites the report of the one before.
set -euo pipefail
nb=${1:?notebook}; run=${2:?run directory}; shift 2
params=()
if [ $# -gt 0 ] && [ -f "$1" ]; then params=(-f "$1"); shift; fi
repo=${T2F_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
tag=${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-local}}${SLURM_ARRAY_TASK_ID:+-$SLURM_ARRAY_TASK_ID}
mkdir -p "$run/notebooks" "$run/logs"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # compute nodes use the models `t2f download` put in the cache
# the CPUs SLURM gave the job (all of this machine outside SLURM), not a thread count inherited from the submitting shell
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-$(nproc)}
echo "$(date -Is) $nb on $(hostname) (job $tag)" | tee -a "$run/logs/$nb-$tag.log"
# the job runs the notebook's exports and its Run section, not its tests (see pipeline.job_notebook)
job="$run/notebooks/.$nb-$tag.job.ipynb"; trap 'rm -f "$job"' EXIT
python -c "from text_to_face.pipeline import job_notebook; job_notebook('$repo/nbs/$nb.ipynb', '$job')"
papermill "$job" "$run/notebooks/$nb-$tag.ipynb" -p run_dir "$run" "${params[@]}" "$@" --log-output \
  2>&1 | tee -a "$run/logs/$nb-$tag.log"
