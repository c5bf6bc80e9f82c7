#!/usr/bin/env bash
# GPU check: on random-weight SD 1.5 and SDXL of full size, time generation (SDXL 1024 px 30 steps; SD 1.5 at 512
# and 320 px), a few LoRA training steps of each and batched vs batch-1 captioning (LLaVA-1.5-7b's architecture),
# and check that every image regenerates bit for bit from its provenance record on the GPU. Meant to end within
# 8 minutes.
# Without CUDA it runs the same on the tiny models on the CPU, in about a minute (a test of the script).
#   sbatch slurm/gpu_check.sh [REPORT.json]   or, on any machine with the project installed:   bash slurm/gpu_check.sh
# The figures also go to REPORT.json (default gpu_check.json), written again as each part ends.
# The Python is text_to_face.train.gpu_check (nbs/03_train.ipynb); this script only starts it.
#SBATCH --job-name=t2f-gpu-check
#SBATCH --gres=gpu:1
#SBATCH --time=00:10:00
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
set -euo pipefail
report=$(realpath -m "${1:-gpu_check.json}")  # before the cd: a relative path is the caller's
repo=${T2F_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
cd "$repo"
export HF_HUB_OFFLINE=1  # everything is built locally, with random weights
exec python -c "import sys; from text_to_face.train import gpu_check; gpu_check(report_path=sys.argv[1])" "$report"
