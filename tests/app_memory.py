#!/usr/bin/env python3
"""Memory of the dashboard: 3 browser sessions of `t2f app` (3 Voila kernels, each with its own model) against
3 sessions of `t2f app --server` (thin kernels) plus the `t2f serve` they draw through (Ray and its workers included).

    python tests/app_memory.py [--model tiny-sd15] [--sessions 3] [--window SECONDS]

Each session opens a case, describes a face and generates an array, so that a standalone kernel has loaded its model.
With --window, memory is sampled every 3 s for that long after Generate and the largest total counts, instead of
waiting for the arrays: for a model whose arrays take many minutes on a CPU (the SD 1.5 architecture: pass its folder).
Prints, per setup, the resident memory (RSS) and the proportional set size (PSS: shared pages split between the
processes that share them) summed over every process of the setup. Not part of CI: it takes a few minutes.
"""
import argparse, os, secrets, signal, subprocess, sys, time
from pathlib import Path
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from test_app_browser import CHROMIUM_ARGS, free_port, open_and_describe  # noqa: E402

def tree(pid):
    "The process `pid` and all its descendants."
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]

def memory(procs):
    "(RSS, PSS) summed over `procs`, in MB."
    rss = pss = 0
    for p in procs:
        try: m = p.memory_full_info(); rss += m.rss; pss += m.pss
        except psutil.Error: pass
    return rss / 2**20, pss / 2**20

def started(cmd, port, env, wait=300):
    "Start `cmd` in a process group of its own; return it once `port` answers."
    import socket
    log = open(f'/tmp/app_memory-{cmd[1]}.log', 'w')
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    end = time.time() + wait
    while time.time() < end and proc.poll() is None:
        try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); return proc
        except OSError: time.sleep(1)
    stop(proc); raise RuntimeError(f'{cmd[:2]} did not start: see /tmp/app_memory-{cmd[1]}.log')

def stop(proc):
    "SIGTERM the process group of `proc`, then SIGKILL it if it lingers."
    try: os.killpg(proc.pid, signal.SIGTERM); proc.wait(60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try: os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError: pass

def sessions(url, n, window=None):
    "Open `n` browser sessions of the dashboard at `url`; each describes a face and generates an array."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=['--headless', *CHROMIUM_ARGS])
        pages = [browser.new_context().new_page() for _ in range(n)]
        for k, page in enumerate(pages): open_and_describe(page, url, '2026-0100', f'W{k}', 'male', 'black')
        for page in pages: page.click('button:has-text("Generate")')
        if window is None:
            for page in pages: page.wait_for_selector('text=6 candidates', timeout=900_000)
            time.sleep(2); yield
        else:
            for _ in range(int(window // 3)): yield; time.sleep(3)
        browser.close()

def measure(model, n, server_args=None, data=None, window=None):
    "(RSS, PSS) in MB of `t2f app` (with `--server URL` when given) with `n` sessions, plus the server's processes."
    env, server = {**os.environ, 'OMP_NUM_THREADS': '1'}, None
    if server_args is not None:
        token, sport = secrets.token_hex(16), free_port()
        env['T2F_SERVE_TOKEN'] = token
        server = started(['t2f', 'serve', '--model', model, '--port', str(sport), *server_args], sport, env)
        time.sleep(5)  # the port answers before the application is deployed
        while subprocess.run(['curl', '-sf', f'http://127.0.0.1:{sport}/health'], capture_output=True).returncode:
            time.sleep(1)
    extra, port = ['--server', f'http://127.0.0.1:{sport}'] if server else [], free_port()  # after Ray took its ports
    app = started(['t2f', 'app', '--model', model, '--port', str(port), '--data-dir', str(data), *extra], port, env)
    total, per_kernel = (0, 0), []
    try:
        for _ in sessions(f'http://127.0.0.1:{port}/', n, window):  # the largest total seen counts
            procs = tree(app.pid) + (tree(server.pid) if server else [])
            kernels = [p for p in procs if 'ipykernel' in ' '.join(p.cmdline())]
            if (now := memory(procs))[0] > total[0]:
                total, per_kernel = now, [round(p.memory_info().rss / 2**20) for p in kernels]
    finally:
        stop(app)
        if server: stop(server)
    return total, per_kernel

if __name__ == '__main__':
    import tempfile
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default='tiny-sd15'); ap.add_argument('--sessions', type=int, default=3)
    ap.add_argument('--thin-only', action='store_true', help='measure only the thin kernels and the server')
    ap.add_argument('--window', type=float, help='seconds to sample after Generate instead of waiting for the arrays')
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        setups = (('standalone', None), ('thin + server', []))
        for name, server_args in setups[1:] if a.thin_only else setups:
            t0 = time.time()
            (rss, pss), kernels = measure(a.model, a.sessions, server_args, Path(d)/name.replace(' ', ''), a.window)
            print(f'{a.model}, {a.sessions} sessions, {name}: RSS {rss:.0f} MB, PSS {pss:.0f} MB; '
                  f'kernels RSS {kernels} MB ({time.time() - t0:.0f} s)', flush=True)
