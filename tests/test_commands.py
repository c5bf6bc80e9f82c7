"The commands a user types, run as a user runs them: in a shell, in a fresh folder."
import json
from pathlib import Path
from conftest import readme_command, sh

def test_main_job_from_readme(tmp_path):
    "The README's offline main job runs in an empty folder and leaves the preprocessed sample behind."
    cmd = readme_command('offline main job')
    assert cmd.startswith('t2f demo')
    done = sh(cmd, tmp_path)
    assert done.returncode == 0, done.stderr
    faces = tmp_path/'t2f-demo'/'faces'
    summary = json.loads((faces/'summary.json').read_text())
    assert summary['sources'] == 29 and summary['kept'] + summary['rejected'] == 29
    rows = [json.loads(l) for l in (faces/'metadata.jsonl').read_text().splitlines()]
    assert len(rows) == summary['kept'] and all((faces/r['file_name']).exists() for r in rows)
    assert 'faces kept of 29 photos' in done.stdout
    stamp = lambda f: ((faces/f).stat().st_mtime_ns, (faces/f).read_bytes())
    crops = lambda: {r['file_name']: stamp(r['file_name']) for r in rows}
    before, log = crops(), faces/'.preprocess'/'progress.jsonl'  # a line per photo processed
    log_before = log.read_bytes()
    again = sh(cmd, tmp_path)  # a second run resumes: nothing to redo, same result
    assert again.returncode == 0, again.stderr
    assert log.read_bytes() == log_before  # no photo processed again
    assert crops() == before  # no crop written again, not even with the same bytes
    assert json.loads((faces/'summary.json').read_text())['kept'] == summary['kept']

def test_help_and_user_errors(tmp_path):
    "Every subcommand has --help; a user mistake is one line on stderr and exit status 2, not a traceback."
    top = sh('t2f --help', tmp_path)
    assert top.returncode == 0 and 'preprocess' in top.stdout
    for name in ['preprocess', 'demo', 'bench', 'readme']:
        assert sh(f't2f {name} --help', tmp_path).returncode == 0
    bad = sh('t2f preprocess run no-such-folder', tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == 't2f preprocess: error: input folder no-such-folder does not exist'
    assert sh('t2f preprocess', tmp_path).returncode == 2  # missing arguments: argparse's usage message

def test_stage_notebook_as_papermill_job(tmp_path, root):
    "A stage notebook runs headless under papermill with its parameters overridden, leaving an executed notebook."
    run = tmp_path/'run'
    done = sh(f'papermill {root}/nbs/00_preprocess.ipynb {tmp_path}/00_preprocess.ipynb -p run_dir {run} -p size 256 -k python3',
              tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run/'faces'/'summary.json').read_text())['settings']['size'] == 256
    assert json.loads((run/'config.json').read_text())['stages']['preprocess']['params']['settings']['size'] == 256
    executed = json.loads((tmp_path/'00_preprocess.ipynb').read_text())
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in executed['cells'])
