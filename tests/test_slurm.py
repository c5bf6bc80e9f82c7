"Stage jobs on a real one-machine SLURM cluster (Debian's slurm-wlm + munge, started by slurm/local_cluster.sh)."
import json, re, subprocess, time
import pytest
from conftest import ROOT, sh

@pytest.fixture(scope='module')
def cluster():
    done = sh(f'{ROOT}/slurm/local_cluster.sh start', ROOT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return True

def job_state(job_id, timeout=600):
    "Wait for a job to end; its final state and exit code."
    end = time.time() + timeout
    while time.time() < end:
        info = subprocess.run(['scontrol', 'show', 'job', job_id], capture_output=True, text=True).stdout
        state = re.search(r'JobState=(\w+)', info).group(1)
        if state not in ('PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING'):
            return state, re.search(r'ExitCode=(\S+)', info).group(1)
        time.sleep(1)
    raise TimeoutError(f'job {job_id} still {state} after {timeout} s')

def sbatch(*args, cwd=ROOT):
    done = subprocess.run(['sbatch', '--parsable', *args], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(';')[0]

def test_preprocess_job(cluster, tmp_path):
    "The preprocess sbatch script runs its notebook under papermill and leaves faces, the executed notebook and a log."
    from text_to_face.sample import sample_photos
    raw, run = sample_photos(tmp_path/'raw'), tmp_path/'run'
    job = sbatch('--cpus-per-task=1', '--mem=2G', f'--output={tmp_path}/%x-%j.out', 'slurm/preprocess.sbatch', str(raw), str(run), '-p', 'size', '128')
    assert job_state(job) == ('COMPLETED', '0:0'), (tmp_path/f't2f-preprocess-{job}.out').read_text()[-3000:]
    assert json.loads((run/'faces'/'summary.json').read_text())['settings']['size'] == 128
    assert (run/'notebooks'/f'00_preprocess-{job}.ipynb').exists() and (run/'logs'/f'00_preprocess-{job}.log').exists()

def test_failed_job_says_why(cluster, tmp_path):
    "A job given a folder that does not exist fails, and its log says which folder."
    job = sbatch('--cpus-per-task=1', '--mem=1G', f'--output={tmp_path}/%x-%j.out', 'slurm/preprocess.sbatch', str(tmp_path/'missing'), str(tmp_path/'run'))
    state, code = job_state(job)
    assert state == 'FAILED' and code != '0:0'
    assert 'input folder' in (tmp_path/'run'/'logs'/f'00_preprocess-{job}.log').read_text()
