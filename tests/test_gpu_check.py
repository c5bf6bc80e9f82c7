"The GPU check script's CPU fallback: with no CUDA it runs on the tiny models, in about a minute."
import json, os, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_gpu_check_cpu_fallback(tmp_path):
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1', 'TMPDIR': str(tmp_path)}
    done = subprocess.run(['bash', ROOT/'slurm'/'gpu_check.sh', 'report.json'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert 'gpu_check on the CPU (no CUDA): tiny models' in out, out
    for name in ('tiny-sd15', 'tiny-sdxl'): assert f"{name} {{'64 px, 4 steps: s'" in out, out
    assert 'speed-up: x' in out and 'all images regenerate bit-exact: True' in out, out
    report = json.loads((tmp_path/'report.json').read_text())  # relative to the caller's folder
    assert report['all bit-exact'] is True, report
    for name in ('tiny-sd15', 'tiny-sdxl'):
        assert report[name]['64 px: regenerates bit-exact'] is True and report[name]['LoRA s/step'] > 0, report
    assert set(report['caption']) == {'batch 1 loop (original)', 'batched (8)'}, report
    assert all(rate > 0 for rate in report['caption'].values()), report

def test_gpu_check_reports_failed_parts(tmp_path):
    "A part that fails is in the report with its error, the other parts still run, and the script fails."
    (tmp_path/'not-a-folder').write_text('')  # no tiny model can be built under a file
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1', 'TMPDIR': str(tmp_path),
           'T2F_CACHE': str(tmp_path/'not-a-folder')}
    done = subprocess.run(['bash', ROOT/'slurm'/'gpu_check.sh', 'report.json'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0, done.stdout
    assert 'gpu_check: tiny-sd15, tiny-sdxl, caption failed' in done.stderr, done.stderr[-3000:]
    report = json.loads((tmp_path/'report.json').read_text())
    for part in ('tiny-sd15', 'tiny-sdxl', 'caption'): assert set(report[part]) == {'error'}, report
    assert report['all bit-exact'] is False, report
