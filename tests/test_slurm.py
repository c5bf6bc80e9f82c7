"""Stage jobs on a real SLURM cluster on this machine (Debian's slurm-wlm + munge, started by slurm/local_cluster.sh):
partition local, one node; partition multi, two nodes (two more slurmd) whose GPUs are only a generic resource."""
import json, os, re, subprocess, time
from pathlib import Path
import pytest
from conftest import ROOT, sh
from text_to_face.pipeline import wait_for_jobs, job_state as pipeline_job_state

@pytest.fixture(scope='module')
def cluster():
    done = sh(f'{ROOT}/slurm/local_cluster.sh start', ROOT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return True

def job_state(job_id, timeout=600):
    "Wait for a job to end; its final state and exit code."
    wait_for_jobs([('job', job_id)], poll=1, timeout=timeout)
    return pipeline_job_state(job_id)

def sbatch(*args, cwd=ROOT, env=None):
    done = subprocess.run(['sbatch', '--parsable', *args], capture_output=True, text=True, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(';')[0]

def test_preprocess_job(cluster, tmp_path):
    "The preprocess sbatch script runs its notebook under papermill and leaves faces, the executed notebook and a log."
    from text_to_face.sample import sample_photos
    raw, run = sample_photos(tmp_path/'raw'), tmp_path/'run'
    job = sbatch('--cpus-per-task=1', '--mem=2G', f'--output={tmp_path}/%x-%j.out', 'slurm/preprocess.sbatch', str(run),
                 '-p', 'input_dir', str(raw), '-p', 'size', '128')
    assert job_state(job) == ('COMPLETED', '0:0'), (tmp_path/f't2f-preprocess-{job}.out').read_text()[-3000:]
    assert json.loads((run/'faces'/'summary.json').read_text())['settings']['size'] == 128
    assert (run/'notebooks'/f'00_preprocess-{job}.ipynb').exists() and (run/'logs'/f'00_preprocess-{job}.log').exists()

def test_failed_job_says_why(cluster, tmp_path):
    "A job given a folder that does not exist fails, and its log says which folder."
    job = sbatch('--cpus-per-task=1', '--mem=1G', f'--output={tmp_path}/%x-%j.out', 'slurm/preprocess.sbatch', str(tmp_path/'run'),
                 '-p', 'input_dir', str(tmp_path/'missing'))
    state, code = job_state(job)
    assert state == 'FAILED' and code != '0:0'
    assert 'input folder' in (tmp_path/'run'/'logs'/f'00_preprocess-{job}.log').read_text()

def run_pipeline(config, *args):
    return subprocess.run([str(ROOT/'slurm'/'submit_pipeline.sh'), str(config), '--wait', *args], capture_output=True, text=True, timeout=1800)

def test_pipeline_on_slurm(cluster, tmp_path):
    "The whole pipeline on the tiny models through submit_pipeline.sh: chained jobs, captioning as a 2-task array plus merge."
    import yaml
    from text_to_face.pipeline import tiny_config
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text()); cfg['slurm']['caption_shards'] = 2; config.write_text(yaml.safe_dump(cfg))
    done = run_pipeline(config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path/'run'
    jobs = json.loads((run/'.pipeline'/'jobs.json').read_text())
    stages = [j['stage'] for j in jobs]
    assert stages == ['preprocess', 'caption', 'caption-merge', 'dataset', 'train', 'generate', 'evaluate']
    assert all(f'{s}: COMPLETED' in done.stdout for s in stages)
    for f in ['faces/metadata.jsonl', 'captions.jsonl', 'captions-0-of-2.jsonl', 'captions-1-of-2.jsonl', 'dataset/train/metadata.jsonl',
              'lora/pytorch_lora_weights.safetensors', 'eval/report.json']:
        assert (run/f).exists(), f
    assert len(list((run/'generated').glob('*.png'))) == 2
    reports = sorted(p.name for p in (run/'notebooks').glob('*.ipynb'))
    assert len(reports) == 7 and any(r.startswith('01_caption-') and r.endswith('-1.ipynb') for r in reports), reports

def test_failed_stage_cancels_the_rest(cluster, tmp_path):
    "A stage that fails cancels every stage after it, and the pipeline says which failed and where its log is."
    import yaml
    from text_to_face.pipeline import tiny_config
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg['dataset'] = {'val_fraction': 2.0}  # impossible: the dataset stage fails
    config.write_text(yaml.safe_dump(cfg))
    done = run_pipeline(config, '--stages', 'preprocess', 'dataset', 'train', 'evaluate')
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'stage dataset failed' in done.stderr and 'its log:' in done.stderr
    log = re.search(r'its log: (\S+);', done.stderr).group(1)
    assert Path(log).exists()
    # afterok + --kill-on-invalid-dep=yes: the scheduler cancels the jobs after the failed one, none starts
    states = dict(re.findall(r'^(\w+): ([A-Z_]+)$', done.stdout, re.M))  # the lines '<stage>: <state>'
    assert states == {'preprocess': 'COMPLETED', 'dataset': 'FAILED', 'train': 'CANCELLED',
                      'evaluate': 'CANCELLED'}, done.stdout
    reports = sorted(p.name.split('-')[0] for p in (tmp_path/'run'/'notebooks').glob('0*.ipynb'))
    assert reports == ['00_preprocess', '02_dataset'], reports  # no report of train or evaluate: never ran

def test_killed_training_job_resumes_when_resubmitted(cluster, tmp_path):
    "A training job cancelled by the scheduler after a checkpoint, submitted again, finishes with the LoRA of a run never stopped."
    import torch, yaml
    from safetensors.torch import load_file
    from text_to_face.train import lfw_dataset, train
    options = dict(model='tiny-sd15', steps=40, resolution=64, validate_every=0, checkpoint_every=5, resume=True, progress=False)
    for run in (tmp_path/'killed', tmp_path/'clean'): lfw_dataset(run/'dataset')
    params = tmp_path/'train.yaml'; params.write_text(yaml.safe_dump({'options': options}))
    args = ['--cpus-per-task=1', '--mem=3G', '--gres=none', f'--output={tmp_path}/%x-%j.out', 'slurm/train.sbatch', str(tmp_path/'killed'), str(params)]
    first = sbatch(*args)
    checkpoints = tmp_path/'killed'/'lora'/'checkpoints'
    end = time.time() + 600
    while time.time() < end and not list(checkpoints.glob('checkpoint-*')): time.sleep(0.5)
    subprocess.run(['scancel', first], check=True)
    assert job_state(first)[0] == 'CANCELLED'
    assert not (tmp_path/'killed'/'lora'/'pytorch_lora_weights.safetensors').exists(), 'the job finished before it was cancelled'
    second = sbatch(*args)
    assert job_state(second) == ('COMPLETED', '0:0'), (tmp_path/f't2f-train-{second}.out').read_text()[-3000:]
    train(tmp_path/'clean', **options)
    a, b = (load_file(r/'lora'/'pytorch_lora_weights.safetensors') for r in (tmp_path/'killed', tmp_path/'clean'))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)

def test_train_multi_gpu_launch(cluster, tmp_path):
    "Several GPUs: train.sbatch takes RUN alone, -p options (as on one GPU) and a parameter file, a port per job, and its CPUs."
    import os, yaml
    params = tmp_path/'train.yaml'; params.write_text(yaml.safe_dump({'options': {'model': 'sd15', 'steps': 40}}))
    def launch(*args, job='4321'):
        env = {**os.environ, 'SLURM_GPUS_ON_NODE': '4', 'SLURM_NNODES': '2', 'SLURM_JOB_ID': job, 'SLURM_CPUS_PER_TASK': '16',
               'SLURM_JOB_NODELIST': 'gpu[01-02]', 'T2F_DRY_RUN': '1', 'T2F_REPO': str(ROOT)}
        done = subprocess.run(['bash', 'slurm/train.sbatch', str(tmp_path/'run'), *args], env=env, capture_output=True,
                              text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return done.stdout
    alone, with_p, both = launch(), launch('-p', 'model', 'sd15', '-p', 'flip', 'False'), launch(str(params), '-p', 'lr', '1e-4')
    assert '--cpus-per-task=16' in alone and '--num_processes 8' in alone and '--main_process_ip gpu01' in alone
    assert "'--model' 'sd15' '--no-flip'" in with_p, with_p
    assert '--model sd15 --steps 40' in both and "'--lr' '1e-4'" in both, both
    assert '--main_process_port 24321' in alone and '--main_process_port 21234' in launch(job='1234')  # a port per job
    bad = subprocess.run(['bash', 'slurm/train.sbatch', str(tmp_path/'run'), '--steps', '5'], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, 'SLURM_GPUS_ON_NODE': '2', 'SLURM_JOB_ID': '1', 'T2F_DRY_RUN': '1', 'T2F_REPO': str(ROOT)})
    assert bad.returncode == 2 and 'expected -p NAME VALUE' in bad.stderr

def test_train_on_two_nodes(cluster, tmp_path):
    """Several nodes for real, on partition multi (two slurmd on this machine, t2f-a and t2f-b, whose 4 "GPUs" each are
    only a generic resource, so the processes train on the CPU): a job on 2 nodes x 1 GPU, given -p options and no
    PARAMS.yaml, runs an `accelerate launch` per node through srun, whose processes meet at the first node (gloo). A
    2-GPU job on one node, given the same recipe as a PARAMS.yaml, runs at the same time on t2f-a with its own port.
    Both finish with the same LoRA. A job there without ACCELERATE_USE_CPU stops, as its processes would never meet."""
    import yaml
    from safetensors.torch import load_file
    from text_to_face.core import read_jsonl
    from text_to_face.train import lfw_dataset
    recipe = dict(model='tiny-sd15', steps=4, resolution=64, batch_size=2, validate_every=0, checkpoint_every=2,
                  mixed_precision='no')
    nodes, node = tmp_path/'nodes', tmp_path/'node'
    for run in (nodes, node): lfw_dataset(run/'dataset')  # 8 training faces: 4 steps of 2 per process
    params = tmp_path/'train.yaml'; params.write_text(yaml.safe_dump({'options': recipe}))
    cpu = {**os.environ, 'ACCELERATE_USE_CPU': '1', 'CUDA_VISIBLE_DEVICES': ''}  # sbatch passes its environment on
    opts = ['--partition=multi', '--cpus-per-task=1', f'--output={tmp_path}/%x-%j.out']
    two = sbatch(*opts, '--nodes=2', '--gres=gpu:1', '--mem=3G', 'slurm/train.sbatch', str(nodes),
                 *[a for k, v in recipe.items() for a in ('-p', k, str(v))], env=cpu)
    one = sbatch(*opts, '--nodes=1', '--nodelist=t2f-a', '--gres=gpu:2', '--mem=5G', 'slurm/train.sbatch', str(node),
                 str(params), env=cpu)
    apart = sbatch(*opts, '--nodes=1', '--gres=gpu:2', '--mem=1G', 'slurm/train.sbatch', str(tmp_path/'apart'),
                   env={**cpu, 'ACCELERATE_USE_CPU': ''})
    out = lambda job: (tmp_path/f't2f-train-{job}.out').read_text()
    for job in (two, one): assert job_state(job) == ('COMPLETED', '0:0'), out(job)[-3000:]
    assert job_state(apart)[0] == 'FAILED' and 'train.sbatch: no CUDA device on' in out(apart)
    info = {j: subprocess.run(['scontrol', 'show', 'job', j], capture_output=True, text=True).stdout for j in (two, one)}
    field = lambda j, k: re.search(rf'\b{k}=(\S+)', info[j]).group(1)
    assert field(two, 'NodeList') in ('t2f-a,t2f-b', 't2f-[a-b]') and field(one, 'NodeList') == 't2f-a'
    assert max(field(j, 'StartTime') for j in info) < min(field(j, 'EndTime') for j in info)  # at once, on t2f-a
    # each at t2f-a's address (NodeAddr), on its own port: 20000 + job id % 20000
    ports = {j: re.search(r'rendezvous at 127\.0\.0\.1:(\d+)', (run/'logs'/f'train-{j}.log').read_text()).group(1)
             for j, run in ((two, nodes), (one, node))}
    assert ports == {j: str(20000 + int(j) % 20000) for j in (two, one)} and ports[two] != ports[one]
    # one log row per step: one main process (processes that never met would each train, and log, alone)
    logs = [read_jsonl(run/'lora'/'log.jsonl') for run in (nodes, node)]
    assert [r['step'] for r in logs[0]] == [r['step'] for r in logs[1]] == [1, 2, 3, 4], logs
    assert all(abs(a['loss'] - b['loss']) < 1e-6 for a, b in zip(*logs)), logs
    a, b = (load_file(run/'lora'/'pytorch_lora_weights.safetensors') for run in (nodes, node))
    assert sorted(a) == sorted(b) and all(v.any() for k, v in a.items() if 'lora_B' in k)  # trained
    # The same two processes on the same halves of each batch, whose gradients gloo sums (a + b = b + a): equal
    # bit for bit where both use as many threads (here 1: OMP_NUM_THREADS), and at worst apart by rounding.
    rel = max(((a[k] - b[k]).norm() / b[k].norm()).item() for k in a if b[k].any())
    assert rel < 1e-5, rel

def test_serve_sbatch_plans_a_ray_cluster_over_the_allocation(cluster):  # scontrol expands the node list
    "slurm/serve.sbatch (dry run): a Ray head on the first node, a worker on each other, one replica per GPU."
    import shutil, subprocess
    from pathlib import Path
    env = {**os.environ, 'SLURM_JOB_NODELIST': 'gpu[1-2]', 'SLURM_JOB_ID': '123', 'SLURM_GPUS_ON_NODE': '4',
           'SLURM_CPUS_PER_TASK': '8', 'T2F_HEAD_IP': '10.0.0.1', 'T2F_DRY_RUN': '1'}
    done = subprocess.run(['bash', 'slurm/serve.sbatch', '--model', 'realvisxl4', '--max-batch', '4'], env=env,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    head, worker, command = done.stdout.splitlines()
    assert head.startswith('head gpu1: ray start --block --num-cpus=8 --num-gpus=4') and '--port=20123' in head
    assert worker.startswith('worker gpu2:') and worker.endswith('--address=10.0.0.1:20123')
    assert command == ('t2f serve --address 10.0.0.1:20123 --host 0.0.0.0 --port 8000 --replicas 8 '
                       '--model realvisxl4 --max-batch 4')
