"""The dashboard's security, over real HTTP against a real `t2f app`: token on every route, no files, private data,
operators' accounts (`t2f app --users`), their cases kept apart, and idle kernels shut down."""
import getpass, os, signal, socket, sqlite3, stat, subprocess, sys, time
from pathlib import Path
import pytest, requests

TOKEN = 'e3b0c44298fc1c149afbf4c8996fb924'
PNG = b'\x89PNG\r\n\x1a\n witness statement: red hair, scar under the right eye'
PLANTED = ['cases/1/0a1b.png', 'exports/case-1-20260101-120000/images/00001.png', 'cache/0a1b.png',
           'page/stray.png']  # even an image dropped beside the page, in Voila's root, is not served

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def listening(port):
    try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); return True
    except OSError: return False

def start_app(data, port, *args, env=None):
    "`t2f app` on the tiny model, its output in data/../t2f-app.log (a pipe nobody reads would fill up and stall it)."
    log = data.parent/f't2f-app-{port}.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen(['t2f', 'app', '--model', 'tiny-sd15', '--port', str(port), '--data-dir', str(data),
                                 *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    end = time.time() + 60
    while not listening(port):
        if time.time() > end or proc.poll() is not None:
            proc.kill(); pytest.fail('t2f app did not start: ' + log.read_text()[-2000:])
        time.sleep(0.5)
    return proc

def descendants(pid):
    "Every living process below `pid`, from /proc."
    parents = {}
    for d in Path('/proc').iterdir():
        try: parents[int(d.name)] = int((d/'stat').read_text().rsplit(')', 1)[1].split()[1])
        except (ValueError, OSError, IndexError): pass
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = {p for p, pp in parents.items() if pp == parent}
        todo += list(kids - found); found |= kids
    return found

def started(pid):
    "When process `pid` started (clock ticks since boot), None if it is gone: a pid and this name one process."
    try: return int(Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError): return None

def kill_tree(pids):
    "SIGKILL each of `pids` (from `started`: {pid: start}) that is still that same process."
    for pid, start in pids.items():
        if start is not None and started(pid) == start:
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass

def stop_app(proc):
    "Stop `t2f app` as a user would (SIGTERM); kill what is left of it if that fails, so no test leaves a server."
    tree = {p: started(p) for p in descendants(proc.pid) | {proc.pid}}
    proc.terminate()
    try: proc.wait(20)
    finally: kill_tree(tree)

def mode(path): return stat.S_IMODE(path.stat().st_mode)

def alive(pid):
    "Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "`t2f app` with a token from a file, over a data folder that already holds case images; (url, data, process)."
    data, port = tmp_path_factory.mktemp('app'), free_port()
    for p in PLANTED: (data/p).parent.mkdir(parents=True, exist_ok=True); (data/p).write_bytes(PNG)
    token_file = tmp_path_factory.mktemp('secret')/'token'
    token_file.write_text(TOKEN + '\n'); token_file.chmod(0o600)
    proc = start_app(data, port, '--token-file', str(token_file))
    yield f'http://127.0.0.1:{port}', data, proc
    stop_app(proc)

@pytest.fixture(scope='module')
def browser(served):
    "A session that opened the page with the token (its kernel runs); (session, page)."
    with requests.Session() as session:
        yield session, session.get(f'{served[0]}/?token={TOKEN}', timeout=180)

def refused(response):
    "A 403/404, or a redirect to the login page: anything but the content."
    return response.status_code in (403, 404) or (response.status_code in (301, 302)
                                                   and '/login' in response.headers.get('Location', ''))

ROUTES = ['/', '/dashboard.ipynb', '/voila/render/dashboard.ipynb', '/voila/tree', '/voila/api/contents/',
          '/voila/files/dashboard.ipynb', '/voila/templates/lab/static/voila.js', '/voila/static/voila.js',
          '/voila/labextensions/@jupyter-widgets/jupyterlab-manager/package.json', '/voila/api/themes/',
          '/api/kernels', '/voila/api/shutdown/0', '/api/contents/']

def test_every_route_needs_the_token(served):
    url, data, _ = served
    for route in ROUTES + [f'/voila/files/{p}' for p in PLANTED]:
        r = requests.get(url + route, allow_redirects=False, timeout=30)
        assert refused(r), (route, r.status_code)
        r = requests.get(url + route, allow_redirects=False, timeout=30, headers={'Authorization': 'token wrong'})
        assert refused(r), (route, r.status_code)

def test_page_with_the_token_and_no_case_files(served, browser):
    url, (session, page) = served[0], browser
    assert page.status_code == 200 and 'composite dashboard' in page.text
    assert 'Signed in as' not in page.text  # one shared token: no operator is signed in
    assert session.get(f'{url}/voila/templates/lab/static/voila.js', timeout=30).status_code == 200  # by cookie
    for p in PLANTED + ['page/dashboard.ipynb', 'dashboard.ipynb', 'cases.db']:  # relative, climbing, absolute
        for route in (f'/voila/files/{p}', f'/voila/files/%2e%2e/{p}', f'/voila/files/{served[1]}/{p}',
                      f'/voila/files/{Path(p).name}'):
            r = session.get(url + route, allow_redirects=False, timeout=30)
            assert r.status_code in (403, 404) and PNG not in r.content, (route, r.status_code)

def test_token_in_no_command_line(served, browser):
    url, data, proc = served  # the browser's kernel runs
    tree = descendants(proc.pid) | {proc.pid}
    cmdlines = {p: Path(f'/proc/{p}/cmdline').read_bytes() for p in tree}
    assert len(cmdlines) >= 3  # t2f, Voila and a kernel
    assert any(b'voila' in c for c in cmdlines.values())
    assert not any(TOKEN.encode() in c for c in cmdlines.values())
    kernels = [p for p, c in cmdlines.items() if b'ipykernel' in c]
    environ = lambda p: Path(f'/proc/{p}/environ').read_bytes().split(b'\0')
    assert kernels and not any(v.startswith(b'JUPYTER_TOKEN=') for p in kernels for v in environ(p))

def test_data_is_private(served, browser):
    "The data folder is its owner's alone, and so is what the kernel (run by `t2f app`) creates in it."
    url, data, _ = served  # the browser's kernel opened cases.db
    assert mode(data) == mode(data/'page') == 0o700
    assert mode(data/'cases.db') == 0o600 and mode(data/'page'/'dashboard.ipynb') == 0o600

SESSION = '''
from pathlib import Path
from text_to_face.cases import CompositeSession
s = CompositeSession({data!r}, 'tiny-sd15', size=64, steps=2)
s.open('2026-0042', 'W1', 'DS Smith'); s.describe({{'sex': 'female', 'hair_colour': 'red'}})
s.select([s.generate(2)[0]['id']]); s.evolve(2)
s.export(Path({data!r})/'exports'/'case-1')
'''

def test_case_files_are_private(tmp_path):
    "A composite session run as `t2f app` runs its server: every folder 0700, every file 0600."
    from text_to_face.app import serve
    data = tmp_path/'app'
    assert serve([sys.executable, '-c', SESSION.format(data=str(data))], dict(os.environ)) == 0
    made = list(data.rglob('*'))
    assert {'cases', 'cache', 'exports', 'cases.db'} <= {p.relative_to(data).parts[0] for p in made}
    assert len([p for p in made if p.suffix == '.png']) >= 10  # case images, cache entries, exported images
    assert {mode(p) for p in made if p.is_dir()} | {mode(data)} == {0o700}
    assert {mode(p) for p in made if p.is_file()} == {0o600}

def test_no_token_on_the_command_line_or_the_network(tmp_path):
    out = subprocess.run(['t2f', 'app', '--token', TOKEN, '--data-dir', str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and 'set T2F_APP_TOKEN or use --token-file' in out.stderr
    readable = tmp_path/'token'; readable.write_text(TOKEN); readable.chmod(0o644)
    out = subprocess.run(['t2f', 'app', '--token-file', str(readable), '--data-dir', str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and 'open to other users (mode 644)' in out.stderr
    env = {k: v for k, v in os.environ.items() if k != 'T2F_APP_TOKEN'}
    out = subprocess.run(['t2f', 'app', '--host', '0.0.0.0', '--data-dir', str(tmp_path)], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 2 and 'needs a token' in out.stderr

def test_token_from_the_environment(tmp_path):
    port = free_port()
    proc = start_app(tmp_path/'app', port, env={**os.environ, 'T2F_APP_TOKEN': TOKEN})
    try:
        url = f'http://127.0.0.1:{port}'
        assert refused(requests.get(f'{url}/voila/templates/lab/static/voila.js', allow_redirects=False, timeout=30))
        r = requests.get(f'{url}/voila/templates/lab/static/voila.js', timeout=30,
                         headers={'Authorization': f'token {TOKEN}'})
        assert r.status_code == 200
    finally: stop_app(proc)

def test_sigterm_stops_server_and_kernels(tmp_path):
    port = free_port()
    proc = start_app(tmp_path/'app', port)
    assert requests.get(f'http://127.0.0.1:{port}/', timeout=180).status_code == 200  # a kernel runs the page
    tree = descendants(proc.pid)
    assert len(tree) >= 2  # Voila and its kernel
    leftovers = {p: started(p) for p in tree | {proc.pid}}
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        end = time.time() + 10
        while (listening(port) or any(map(alive, tree))) and time.time() < end: time.sleep(0.3)
        assert not listening(port)
        assert not [p for p in tree if alive(p)]
    finally: kill_tree(leftovers)  # nothing of it outlives the test, even when the test fails

def add_operator(users, name):
    "`t2f app-user NAME --users FILE`, as whoever runs the dashboard would; the token it prints once."
    out = subprocess.run(['t2f', 'app-user', name, '--users', str(users)], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]

@pytest.fixture(scope='module')
def operators(tmp_path_factory):
    "`t2f app --users FILE` with three operators; (url, data, users file, {name: token})."
    data, port = tmp_path_factory.mktemp('ops'), free_port()
    users = tmp_path_factory.mktemp('users')/'users.json'
    tokens = {n: add_operator(users, n) for n in ('DS Smith', 'PC Jones', 'DC Temp')}
    proc = start_app(data, port, '--users', str(users), env={**os.environ, 'T2F_APP_TOKEN': TOKEN})
    yield f'http://127.0.0.1:{port}', data, users, tokens
    stop_app(proc)

def test_operators_every_route(operators):
    "Every route refuses no token, a wrong one, and the shared token (ignored with --users); an operator's opens it."
    url, data, users, tokens = operators
    assert not any(t in users.read_text() for t in tokens.values())  # hashes only
    for route in ROUTES:
        for headers in ({}, {'Authorization': 'token wrong'}, {'Authorization': f'token {TOKEN}'}):
            r = requests.get(url + route, allow_redirects=False, timeout=30, headers=headers)
            assert refused(r), (route, headers, r.status_code)
    for name, token in tokens.items():
        r = requests.get(f'{url}/voila/templates/lab/static/voila.js', timeout=30,
                         headers={'Authorization': f'token {token}'})
        assert r.status_code == 200, name

def test_removed_operator_is_out_at_once(operators):
    "An operator taken out of the users file loses their login cookie and their token, the server still running."
    url, _, users, tokens = operators
    static = f'{url}/voila/templates/lab/static/voila.js'
    with requests.Session() as session:
        assert session.get(f'{static}?token={tokens["DC Temp"]}', timeout=30).status_code == 200
        assert session.get(static, timeout=30).status_code == 200  # by cookie
        subprocess.run(['t2f', 'app-user', 'DC Temp', '--users', str(users), '--remove'], check=True)
        assert refused(session.get(static, allow_redirects=False, timeout=30))
        assert refused(session.get(f'{static}?token={tokens["DC Temp"]}', allow_redirects=False, timeout=30))

def signed_in(page, name):
    "Whether the page says `name` is signed in (Voila embeds the cell's HTML output as JSON, < as \\u003c)."
    return page.status_code == 200 and f'Signed in as \\u003cb\\u003e{name}\\u003c/b\\u003e' in page.text

def audit(data):
    with sqlite3.connect(data/'cases.db') as db: return db.execute('select operator, action from audit').fetchall()

def test_one_operators_case_refused_to_another(operators):
    "The page's kernel opens a linked case as the operator the server signed in, whatever the browser says."
    url, data, _, tokens = operators
    link = '&case=2026-0042&witness=W1'
    smith = requests.get(f'{url}/?token={tokens["DS Smith"]}{link}&operator=PC+Jones', timeout=180)
    assert signed_in(smith, 'DS Smith')
    with sqlite3.connect(data/'cases.db') as db:
        assert db.execute('select case_number, witness, operator from cases').fetchall() == [('2026-0042', 'W1', 'DS Smith')]
    jones = requests.get(f'{url}/?token={tokens["PC Jones"]}{link}', timeout=180)
    assert signed_in(jones, 'PC Jones')
    assert audit(data) == [('DS Smith', 'open'), ('PC Jones', 'refused')]
    subprocess.run(['t2f', 'app-grant', '2026-0042', 'W1', 'PC Jones', '--data-dir', str(data)], check=True)
    assert signed_in(requests.get(f'{url}/?token={tokens["PC Jones"]}{link}', timeout=180), 'PC Jones')
    assert audit(data)[-2:] == [(getpass.getuser(), 'grant'), ('PC Jones', 'open')]
    log = subprocess.run(['t2f', 'app-audit', '--data-dir', str(data)], capture_output=True, text=True, check=True)
    assert [l.split('\t')[1:3] for l in log.stdout.splitlines()][:2] == [['DS Smith', 'open'], ['PC Jones', 'refused']]

def cmdline(pid):
    try: return Path(f'/proc/{pid}/cmdline').read_bytes()
    except OSError: return b''

def test_idle_kernels_are_shut_down(tmp_path):
    "A kernel idle past --idle-minutes is shut down (its model freed), the server still running."
    port = free_port()
    proc = start_app(tmp_path/'app', port, '--idle-minutes', '0.05')  # 3 s
    try:
        assert requests.get(f'http://127.0.0.1:{port}/', timeout=180).status_code == 200  # a kernel runs the page
        kernels = lambda: [p for p in descendants(proc.pid) if alive(p) and b'ipykernel' in cmdline(p)]
        assert kernels()
        end = time.time() + 60
        while kernels() and time.time() < end: time.sleep(1)
        assert not kernels() and listening(port)
    finally: stop_app(proc)
