"The GPU check script's CPU fallback: with no CUDA it runs on the tiny models, in about a minute."
import os, subprocess, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_gpu_check_cpu_fallback(tmp_path):
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1', 'TMPDIR': str(tmp_path)}
    start = time.time()
    done = subprocess.run(['bash', 'slurm/gpu_check.sh'], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    seconds = time.time() - start
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert 'gpu_check on the CPU (no CUDA): tiny models' in out, out
    for name in ('tiny-sd15', 'tiny-sdxl'): assert f"{name} {{'64 px, 4 steps: s'" in out, out
    assert 'LoRA s/step' in out and 'speed-up: x' in out, out
    assert 'all images regenerate bit-exact: True' in out, out
    assert seconds < 150, f'the CPU fallback took {seconds:.0f} s'
