"Shared fixtures for the tests that drive text_to_face from outside: its commands, its notebooks as jobs."
import os, re, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('OMP_NUM_THREADS', '1')  # the commands these tests start share a small machine
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # and never reach the network

def readme_command(label):
    "The command on the README line that ends with `# label`."
    line = next(l for l in (ROOT/'README.md').read_text().splitlines() if re.search(rf'#\s*{label}\s*$', l))
    return re.sub(rf'\s*#\s*{label}\s*$', '', line)

def sh(cmd, cwd, timeout=900):
    "Run a shell command; the completed process, with output captured as text."
    return subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout)

@pytest.fixture
def root(): return ROOT
