#!/usr/bin/env python3
"""Mutation check: do the tests fail when the code is wrong?

Each mutant (tests/mutants/*.yaml) is one deliberate bug: a string of an exported cell of a notebook replaced
by another. For each, the script copies the repository to a scratch folder, applies the mutant to the notebook,
re-exports the library there with `nbdev_export`, and runs only the notebooks (and pytest tests) concerned,
with the scratch library first on PYTHONPATH. A mutant is *caught* when that run fails.

    python tests/mutate.py                  # every mutant, 2 at a time; prints a table, writes mutants-report.json
    python tests/mutate.py --only preprocess-overwrite-ignored --keep   # one mutant; keep its scratch copy
    python tests/mutate.py --list           # the mutants, without running them
    python tests/mutate.py --dry-run        # check that every mutant applies to today's notebooks
    python tests/mutate.py --baseline       # run the notebooks and tests the mutants use, unmutated (they must pass)

Not part of CI (it takes an hour on two cores): run it before a refactor and after adding tests.
A mutant file is a YAML list of {name, nb, old, new, run?, pytest?, why}: `old` must occur exactly once in
the exported code of `nbs/<nb>.ipynb`; `run` lists the notebooks to run (default: `nb` itself); `pytest` lists
test ids under tests/ to run as well.
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]

def load_mutants(folder=ROOT/'tests'/'mutants'):
    "Every mutant of every YAML file in `folder`, checked for the keys it needs and for unique names."
    out = []
    for f in sorted(Path(folder).glob('*.yaml')):
        for m in yaml.safe_load(f.read_text()) or []:
            missing = {'name', 'nb', 'old', 'new', 'why'} - set(m)
            if missing: sys.exit(f'{f.name}: mutant {m.get("name")!r} lacks {sorted(missing)}')
            out.append({'run': [m['nb']], 'pytest': [], **m, 'file': f.name})
    names = [m['name'] for m in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes: sys.exit(f'mutant names used twice: {sorted(dupes)}')
    return out

def is_exported(source): return any(l.replace(' ', '').startswith('#|export') for l in source.splitlines())

def apply_mutant(repo, m, write=True):
    "Replace `old` by `new` in the one exported cell of repo/nbs/<nb>.ipynb that holds it."
    path = Path(repo)/'nbs'/f"{m['nb']}.ipynb"
    nb = json.loads(path.read_text())
    hits = [c for c in nb['cells'] if c['cell_type'] == 'code' and is_exported(''.join(c['source']))
            and m['old'] in ''.join(c['source'])]
    count = sum(''.join(c['source']).count(m['old']) for c in hits)
    if count != 1: raise ValueError(f"mutant {m['name']}: `old` occurs {count} times in the exported code of {path.name}")
    src = ''.join(hits[0]['source']).replace(m['old'], m['new'])
    hits[0]['source'] = src.splitlines(keepends=True)
    if write: path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def scratch_copy(dest):
    "The working tree as git sees it (tracked and untracked-but-not-ignored files) copied into `dest`."
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split('\0')
    for f in filter(None, files):
        src = ROOT/f
        if src.is_file() or src.is_symlink():
            (dest/f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest/f, follow_symlinks=False)
    return dest

def run_checks(repo, m, timeout):
    "Export the library in `repo`, then run the mutant's notebooks and tests; (passed, seconds, last output)."
    env = {**os.environ, 'PYTHONPATH': str(repo), 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
    steps = [['nbdev_export']] + [['nbdev_test', '--flags', 'slow', '--path', f'nbs/{nb}.ipynb'] for nb in m['run']]
    if m['pytest']: steps.append([sys.executable, '-m', 'pytest', '-x', '-q', *[f'tests/{t}' for t in m['pytest']]])
    t0, out = time.time(), ''
    for cmd in steps:
        try: p = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired: return False, time.time() - t0, f'timed out after {timeout} s: {cmd}'
        out = p.stdout + p.stderr  # whole: an assertion that prints long values names its error far from the end
        if p.returncode: return False, time.time() - t0, out
    return True, time.time() - t0, out

def failure_line(out):
    "The line of a check's output that says why it failed: the last exception named, else the last line."
    lines = [re.sub(r'\x1b\[[0-9;]*m', '', l).strip() for l in out.strip().splitlines()]
    named = [l for l in lines if re.search(r'\w*(Error|Exception)\b', l)]
    return (named or lines or [''])[-1][:200]

def check_mutant(m, timeout, keep=False, mutate=True):
    "Run one mutant in its own scratch copy: caught (the checks failed), survived, or broken (did not apply)."
    tmp = Path(tempfile.mkdtemp(prefix=f"mutant-{m['name']}-"))
    try:
        repo = scratch_copy(tmp)
        if mutate:
            try: apply_mutant(repo, m)
            except ValueError as e: return {**m, 'outcome': 'broken', 'detail': str(e), 'seconds': 0}
        passed, secs, out = run_checks(repo, m, timeout)
        outcome = ('survived' if passed else 'caught') if mutate else ('passes' if passed else 'FAILS')
        if out.startswith('timed out'): outcome = 'timed out'  # neither caught nor survived: rerun with more time
        return {**m, 'outcome': outcome, 'seconds': round(secs), 'detail': failure_line(out)}
    finally:
        if keep: print(f'kept {tmp}')
        else: shutil.rmtree(tmp, ignore_errors=True)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', nargs='*', help='names of the mutants to run (default: all)')
    ap.add_argument('--list', action='store_true', help='list the mutants and exit')
    ap.add_argument('--dry-run', action='store_true', help='check that every mutant applies, run nothing')
    ap.add_argument('--baseline', action='store_true', help='run the notebooks and tests the mutants use, unmutated')
    ap.add_argument('--jobs', type=int, default=2, help='mutants at a time')
    ap.add_argument('--timeout', type=int, default=1200, help='seconds per check before it counts as failed')
    ap.add_argument('--keep', action='store_true', help='keep the scratch copies')
    ap.add_argument('--report', default='mutants-report.json', help='where to write the results')
    a = ap.parse_args()
    mutants = load_mutants()
    if a.only: mutants = [m for m in mutants if m['name'] in a.only] or sys.exit(f'no mutant named {a.only}')
    if a.dry_run:
        broken = []
        for m in mutants:
            try: apply_mutant(ROOT, m, write=False)
            except ValueError as e: broken.append(str(e))
        print('\n'.join(broken) or f'all {len(mutants)} mutants apply')
        sys.exit(1 if broken else 0)
    if a.list:
        for m in mutants: print(f"{m['name']:40} {m['nb']:15} {m['why']}")
        return
    if a.baseline:  # one run per distinct set of checks, unmutated
        mutants = list({(tuple(m['run']), tuple(m['pytest'])): {**m, 'name': '+'.join(m['run'] + m['pytest'])}
                        for m in mutants}.values())
    print(f'{len(mutants)} {"baseline runs" if a.baseline else "mutants"}, {a.jobs} at a time', flush=True)
    results = []
    with ThreadPoolExecutor(a.jobs) as pool:
        for r in pool.map(lambda m: check_mutant(m, a.timeout, a.keep, not a.baseline), mutants):
            results.append(r); print(f"{r['outcome']:9} {r['seconds']:5} s  {r['name']}", flush=True)
    Path(a.report).write_text(json.dumps(results, indent=1))
    counted = [r for r in results if r['outcome'] in ('caught', 'survived')]
    caught = sum(r['outcome'] == 'caught' for r in counted)
    print(f'\n| mutant | notebook | outcome | s | last error |\n|---|---|---|---|---|')
    for r in results:
        why = r['detail'].replace('|', '/') if r['outcome'] != 'survived' else ''
        print(f"| {r['name']} | {r['nb']} | {r['outcome']} | {r['seconds']} | {why} |")
    if not a.baseline: print(f'\ncaught {caught} of {len(counted)} ({100 * caught / max(len(counted), 1):.0f}%)'
                             + (f"; {len(results) - len(counted)} did not apply" if len(results) > len(counted) else ''))
    sys.exit(0 if all(r['outcome'] in ('caught', 'passes') for r in results) else 1)

if __name__ == '__main__': main()
