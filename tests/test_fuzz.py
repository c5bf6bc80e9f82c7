"""Coverage-guided fuzzing (atheris) of the parsers that read what users hand to `t2f` (issue 16).

Each target runs in its own process (`python tests/test_fuzz.py TARGET LIBFUZZER-ARGS...`), bounded in time, from
the committed seeds in tests/fuzz_corpus/TARGET (new inputs go to a temporary folder, never into the seeds).
A target fails on any exception its contract does not allow. An exception that a strict-xfail case of
tests/test_bad_inputs.py already reports as a BUG is tolerated here (KNOWN), so that the fuzzer keeps looking past
it; once the bug is fixed, remove its line from KNOWN."""
import os, re, shutil, subprocess, sys, tempfile
from pathlib import Path
import pytest

HERE = Path(__file__).resolve().parent
CORPUS = HERE/'fuzz_corpus'
SECONDS = 10  # fuzzing time per target

# target -> [(exception type name, message pattern, where: a function in the traceback or None, the BUG case of
#            test_bad_inputs.py that shows it)]
KNOWN = {
    'image': [],
    'metadata': [],
    'record': [],
    'prompt': [],
}

# ------------------------------------------------------------------------------------ the fuzz targets

def _scratch():
    return Path(tempfile.mkdtemp(prefix='t2f-fuzz-'))

def image_target():
    "Image decoding: `_open_checked` on any bytes raises `Rejected` or returns a decoded image."
    from text_to_face.preprocess import _open_checked, Rejected
    path = _scratch()/'photo'
    def one(data):
        path.write_bytes(data)
        try: _open_checked(str(path), 1_000_000).close()
        except Rejected: pass
    return one

def metadata_target():
    "Metadata CSV reading: `read_metadata` on any bytes raises a ValueError (the CLI's clean error) or reads a table."
    from text_to_face.preprocess import read_metadata
    path = _scratch()/'meta.csv'
    def one(data):
        path.write_bytes(data)
        try: read_metadata(path)
        except ValueError: pass  # UnicodeDecodeError, pandas' ParserError and EmptyDataError among them
    return one

def record_target():
    "Provenance records: a PNG's bytes (starting with the PNG signature), or a record's text put into a PNG,"
    " read by `read_record` and checked by `check_sources` as `t2f regenerate` does; only the CLI's user errors."
    from PIL import Image, PngImagePlugin
    from text_to_face.cli import USER_ERRORS
    from text_to_face.generate import read_record, check_sources, parse_parameters
    folder = _scratch(); png = folder/'image.png'
    blank = Image.new('RGB', (8, 8))
    def one(data):
        if data.startswith(b'\x89PNG'): png.write_bytes(data)
        else:
            text = data.decode('utf-8', 'replace')
            info = PngImagePlugin.PngInfo(); info.add_itxt('t2f_record', text)
            blank.save(png, format='PNG', pnginfo=info)
            try: parse_parameters(text)
            except ValueError: pass
        try: check_sources(read_record(png))
        except USER_ERRORS: pass
    return one

def _value(fdp, depth=0):
    "A YAML-like value: text, a number, a flag, None, or (not too deep) a list or mapping of them."
    kind = fdp.ConsumeIntInRange(0, 7 if depth < 2 else 4)
    if kind == 0: return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 1: return fdp.ConsumeIntInRange(-10**6, 10**6)
    if kind == 2: return fdp.ConsumeFloat()
    if kind == 3: return fdp.ConsumeBool()
    if kind == 4: return None
    if kind == 5: return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}

def prompt_target():
    "Prompt checking: `check_request`, `validate_attributes` and `forensic_prompt` on fuzzed text and attributes."
    import atheris
    from text_to_face.generate import check_request
    from text_to_face.schema import validate_attributes, forensic_prompt, load_schema
    names = list(load_schema()['attributes'])
    def attributes(fdp):
        out = {}
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            key = fdp.PickValueInList(names) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(10)
            out[key] = _value(fdp)
        return out
    def one(data):
        fdp = atheris.FuzzedDataProvider(data)
        what = fdp.ConsumeIntInRange(0, 2)
        try:
            if what == 0:
                check_request(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300)),
                              [fdp.ConsumeIntInRange(-2**33, 2**33) for _ in range(fdp.ConsumeIntInRange(0, 3))],
                              _value(fdp), _value(fdp), _value(fdp),
                              fdp.ConsumeUnicodeNoSurrogates(20) if fdp.ConsumeBool() else None, _value(fdp))
            elif what == 1: validate_attributes(attributes(fdp))
            else:
                description = attributes(fdp) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(200)
                forensic_prompt(description, fdp.ConsumeUnicodeNoSurrogates(20) if fdp.ConsumeBool() else None)
        except ValueError: pass
    return one

TARGETS = {'image': (image_target, ['text_to_face', 'PIL']), 'metadata': (metadata_target, ['text_to_face']),
           'record': (record_target, ['text_to_face']), 'prompt': (prompt_target, ['text_to_face'])}

def _known(target, e):
    "Whether `e` is a bug already reported by a strict-xfail case of test_bad_inputs.py."
    import traceback
    frames = [f'{f.filename}:{f.name}' for f in traceback.extract_tb(e.__traceback__)]
    return any(re.fullmatch(kind, type(e).__name__) and re.search(pattern, str(e))
               and (where is None or any(f.endswith(where) or f.endswith(':' + where) for f in frames))
               for kind, pattern, where, _ in KNOWN[target])

def fuzz(target, args):
    "Run the fuzzer on `target` with libFuzzer's `args` (this process exits when it is done)."
    import atheris
    make, include = TARGETS[target]
    with atheris.instrument_imports(include=include):
        one = make()
    def test_one_input(data):
        try: one(data)
        except Exception as e:
            if not _known(target, e): raise
    atheris.Setup([sys.argv[0], *args], test_one_input)
    atheris.Fuzz()

if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    fuzz(sys.argv[1], sys.argv[2:])

# ------------------------------------------------------------------------------------ the tests

@pytest.mark.parametrize('target', list(TARGETS))
def test_fuzz(target, tmp_path):
    "The fuzzer runs `SECONDS` on `target` from its seeds and finds no exception outside the target's contract."
    import atheris  # noqa: F401  (a dev requirement: missing, the test fails, it does not skip)
    seeds = CORPUS/target
    assert len(list(seeds.iterdir())) >= 3, f'{seeds} needs its seed files'
    found = tmp_path/'found'; found.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', T2F_DEBUG='')
    cmd = [sys.executable, __file__, target, f'-max_total_time={SECONDS}', '-max_len=4096', '-timeout=20',
           '-rss_limit_mb=4096', f'-artifact_prefix={tmp_path}/', '-print_final_stats=1', str(found), str(seeds)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 150, cwd=tmp_path, env=env)
    log = done.stdout + done.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(('crash-', 'timeout-', 'oom-')))
    assert done.returncode == 0 and not crashes, f'{target}: {crashes}\n{log[-6000:]}'
    assert re.search(r'stat::number_of_executed_units:\s*[1-9]', log), log[-3000:]  # it fuzzed
