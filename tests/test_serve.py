"""`t2f serve` for real, deployed by `t2f serve --address` onto a Ray cluster of two nodes on this machine, started once
for the whole file; tiny-sd15 at 64 px, 2 steps."""
import asyncio, base64, io, json, os, secrets, subprocess, time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
import httpx, numpy as np, pytest
from PIL import Image

TOKEN = secrets.token_hex(16)
AUTH = {'Authorization': f'Bearer {TOKEN}'}
SMALL = {'size': 64, 'steps': 2}

@pytest.fixture(scope='module')
def cluster():
    "Ray with two nodes, as `ray.cluster_utils.Cluster` makes them on one machine: a head with no CPUs, so that every replica runs on the worker (2 CPUs); this process joins it."
    import ray
    from ray import serve as ray_serve
    from ray.cluster_utils import Cluster
    from text_to_face.serve import RAY_PATIENCE
    for name, seconds in RAY_PATIENCE.items(): os.environ.setdefault(name, seconds)  # the nodes inherit it
    c = Cluster(initialize_head=True, head_node_args={'num_cpus': 0, 'include_dashboard': False})
    try:
        c.add_node(num_cpus=2)
        ray.init(address=c.address, log_to_driver=False)
        yield c
    finally:
        if ray.is_initialized(): ray_serve.shutdown(); ray.shutdown()
        c.shutdown()

@pytest.fixture(scope='module')
def operators(tmp_path_factory):
    "A users file of two operators, as `t2f app-user` writes it; (its path, {name: token})."
    from text_to_face.cases import add_operator
    users = tmp_path_factory.mktemp('users')/'users.json'
    return users, {name: add_operator(users, name) for name in ('DS Smith', 'PC Jones')}

@pytest.fixture(scope='module')
def server(cluster, operators):
    "The URL of `t2f serve --address CLUSTER --users FILE --detach` with tiny-sd15 (batches of up to 8), left running on the cluster."
    from text_to_face.serve import _free_port
    port = _free_port()
    cmd = ['t2f', 'serve', '--address', cluster.address, '--port', str(port), '--max-batch', '8', '--batch-wait', '0.5',
           '--dtype', 'fp32', '--cpus', '0.5', '--users', str(operators[0]), '--detach']
    done = subprocess.run(cmd, env={**os.environ, 'T2F_SERVE_TOKEN': TOKEN}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return f'http://127.0.0.1:{port}'

def replica(app, deployment):
    "The name and actor of the one replica of `deployment` in Serve application `app`, found by Ray's name for it."
    import ray
    prefix = f'SERVE_REPLICA::{app}#{deployment}#'
    [name] = [a['name'] for a in ray.util.list_named_actors(all_namespaces=True) if a['name'].startswith(prefix)]
    return name, ray.get_actor(name, namespace='serve')

@pytest.fixture(scope='module')
def tight(server):
    "A second application on the same Ray: one request per call, one place in its queue, 4 s timeout; a captioner."
    from ray import serve as ray_serve
    from text_to_face.serve import ServeSettings, build_app, token_digest
    settings = ServeSettings(max_batch=1, max_queue=1, timeout=4, cpus=0.5)
    app = build_app('tiny-sd15', [], token_digest(TOKEN), settings, captioner='tiny-llava', dtype='fp32')
    ray_serve.run(app, name='tight', route_prefix='/tight')
    yield f'{server}/tight'  # taken down with the server: deleting it first waits on a timed-out request

def post_all(url, bodies):
    "Post every body to `url`/generate-image at the same time; the responses, in order."
    async def go():
        async with httpx.AsyncClient(timeout=300, headers=AUTH) as c:
            return await asyncio.gather(*[c.post(f'{url}/generate-image', json=b) for b in bodies])
    return asyncio.run(go())

def saved(image, path):
    "Write the base64 PNG of a served image to `path`; `path`."
    path.write_bytes(base64.b64decode(image['png']))
    return path

ROUTES = [('GET', '/models'), ('GET', '/metrics'), ('GET', '/docs'), ('GET', '/openapi.json'), ('GET', '/nothing'),
          ('POST', '/generate-image'), ('POST', '/regenerate'), ('POST', '/generate-caption')]

def test_every_route_but_health_wants_the_token(server):
    "Without the token, or with a wrong one, every route but /health answers 401 before reading the request."
    assert httpx.get(f'{server}/health').json() == {'status': 'ok'}
    wrong = {'Authorization': 'Bearer ' + secrets.token_hex(16)}
    for headers in ({}, wrong, {'Authorization': f'Basic {TOKEN}'}):
        for method, path in ROUTES:
            r = httpx.request(method, server + path, headers=headers, content=b'{broken json')
            assert r.status_code == 401 and 'Bearer TOKEN' in r.json()['detail'], (path, r.text)
            assert r.headers['www-authenticate'] == 'Bearer, Basic realm="t2f"'
    docs = httpx.get(f'{server}/docs', headers=AUTH)
    assert docs.status_code == 200 and 'swagger' in docs.text.lower()
    paths = httpx.get(f'{server}/openapi.json', headers=AUTH).json()['paths']
    assert {'/generate-image', '/regenerate', '/generate-caption', '/health', '/models', '/metrics'} <= set(paths)

def test_bad_requests_get_422_with_the_clis_reason(server):
    "Each bad request is refused with the message `t2f generate` gives (check_request's), never a traceback."
    from text_to_face.generate import check_request
    cli = lambda *args: str(pytest.raises(ValueError, check_request, ['a man'], *args).value)
    cases = [({'description': ''}, 'description is empty'),
             ({'description': '  ', 'raw': True}, 'prompt is empty'),
             ({'description': 'a man', 'size': 0}, cli([0], 0, 25, 7.0)),
             ({'description': 'a man', 'steps': -1}, cli([0], 320, -1, 7.0)),
             ({'description': 'a man', 'seed': -1}, cli([-1], 320, 25, 7.0)),
             ({'description': 'a man', 'guidance': 99}, cli([0], 320, 25, 99.0)),
             ({'description': 'a man', 'n': 100}, 'n: Input should be less than or equal to 16'),
             ({'description': 'a man', 'scheduler': 'ddim'}, "scheduler: Input should be 'dpmpp-2m-karras'"),
             ({'description': {'sex': 'robot'}}, 'robot'),
             ({'description': 'a man', 'stpes': 2}, 'stpes: Extra inputs are not permitted'),
             ({'size': 64}, 'description: Field required')]
    for body, says in cases:
        r = httpx.post(f'{server}/generate-image', json=body, headers=AUTH)
        assert r.status_code == 422 and says in r.json()['detail'], (body, r.text)
        assert 'Traceback' not in r.text
    broken = httpx.post(f'{server}/generate-image', content=b'{"description": ',
                        headers={**AUTH, 'Content-Type': 'application/json'})
    assert broken.status_code == 422 and 'JSON' in broken.json()['detail']
    for body, says in [(b'', 'request body'), (b'not a png', 'not an image')]:
        r = httpx.post(f'{server}/regenerate', content=body, headers=AUTH)
        assert r.status_code == 422 and says in r.json()['detail'], r.text

def test_16_concurrent_requests_are_batched_and_regenerate_bit_exact(server, tmp_path):
    "16 clients at once: all answered, in model calls of several requests, each PNG regenerating to the bit."
    from text_to_face.generate import generator_for, read_record, regenerate_image
    bodies = [{'description': f'a man with scar number {i}', 'seed': i, **SMALL} for i in range(16)]
    answers = post_all(server, bodies)
    assert [a.status_code for a in answers] == [200] * 16, [a.text[:300] for a in answers]
    gen = None
    for i, a in enumerate(answers):
        image = a.json()['images'][0]
        path = saved(image, tmp_path/f'{i}.png')
        record = read_record(path)
        assert (record['id'], record['seed'], record['prompt']) == (image['id'], i, a.json()['prompt'])
        assert record['statement'].startswith('AI-generated image made by text_to_face')
        gen = gen or generator_for(record)
        again = regenerate_image(path, gen)
        assert np.array_equal(np.asarray(again.image), np.asarray(Image.open(path).convert('RGB'))), i
    assert max(a.json()['batch_requests'] for a in answers) > 1
    metrics = httpx.get(f'{server}/metrics', headers=AUTH).json()
    print('model calls by requests in them:', metrics['batches'], 'max in flight:', metrics['max_in_flight'])
    assert metrics['largest_batch'] > 1 and metrics['max_in_flight'] >= 8 and metrics['images'] >= 16
    rebuilt = httpx.post(f'{server}/regenerate', content=(tmp_path/'5.png').read_bytes(), headers=AUTH,
                         timeout=300)
    assert rebuilt.status_code == 200 and rebuilt.json()['identical'] is True, rebuilt.text

def test_a_batched_image_carries_only_its_own_request(server, tmp_path):
    "Two cases made in one model call: neither PNG holds the other's description or seed, and each regenerates bit for bit with `t2f regenerate` (one prompt is two CLIP windows long, which pads the other's)."
    bodies = [{'description': 'a woman with a purple mohawk', 'seed': 424242, 'raw': True, **SMALL},
              {'description': ', '.join(['a man in a zebra-striped scarf and a wide hat'] * 8), 'seed': 737373,
               'raw': True, **SMALL}]
    answers = post_all(server, bodies)
    assert [a.json()['batch_requests'] for a in answers] == [2, 2], [a.text[:300] for a in answers]
    paths = [saved(a.json()['images'][0], tmp_path/f'case{i}.png') for i, a in enumerate(answers)]
    for i, path in enumerate(paths):
        with Image.open(path) as img: text = ' '.join(img.text.values())  # the record and A1111's parameters
        mine, theirs = bodies[i], bodies[1 - i]
        assert str(mine['seed']) in text and mine['description'][:20] in text
        assert str(theirs['seed']) not in text and theirs['description'][:20] not in text, text
    batches = [json.loads(Image.open(p).text['t2f_record'])['batch'] for p in paths]
    assert sorted(b['index'] for b in batches) == [0, 1] and {(b['size'], b['tokens']) for b in batches} == {(2, 154)}
    short = paths[0]  # the one padded to the other's length: by the command, the other by its function here
    done = subprocess.run(['t2f', 'regenerate', str(short)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and 'bit-identical to' in done.stdout, done.stdout + done.stderr[-2000:]
    from text_to_face.generate import regenerate
    assert regenerate(str(paths[1])) is True

def test_a_served_png_has_the_watermark_and_regenerates_with_t2f_regenerate(server, tmp_path):
    "At 256 px the image carries its record's id in the watermark; `t2f regenerate` rebuilds it bit for bit."
    from text_to_face.generate import read_record, read_watermark, regenerate
    r = httpx.post(f'{server}/generate-image', json={'description': 'a woman', 'size': 256, 'steps': 2, 'n': 2},
                   headers=AUTH, timeout=300)
    assert r.status_code == 200, r.text
    path = saved(r.json()['images'][1], tmp_path/'big.png')
    record = read_record(path)
    assert record['watermark'] == 'dwtDctSvd:32' and read_watermark(path) == record['id']
    assert regenerate(str(path)) is True

def test_regenerate_refuses_an_image_of_another_setup(server, tmp_path):
    "A record whose dtype is not the server's is refused with the reason, not made into other bits."
    from text_to_face.generate import read_record, save_png
    r = httpx.post(f'{server}/generate-image', json={'description': 'a man', **SMALL}, headers=AUTH, timeout=300)
    path = saved(r.json()['images'][0], tmp_path/'a.png')
    save_png(Image.open(path), {**read_record(path), 'dtype': 'bf16'}, tmp_path/'other.png')
    refused = httpx.post(f'{server}/regenerate', content=(tmp_path/'other.png').read_bytes(), headers=AUTH)
    assert refused.status_code == 422 and 'another dtype' in refused.json()['detail'], refused.text

def test_models(server):
    "/models names the model and its hash; without a captioner, /generate-caption is not there (404)."
    models = httpx.get(f'{server}/models', headers=AUTH).json()
    assert models['model'] == 'tiny-sd15' and len(models['model_hash']) == 64
    assert models['captioner'] is None
    assert models['dtype'] == 'fp32' and models['max_images'] == 16
    assert httpx.post(f'{server}/generate-caption', content=b'x', headers=AUTH).status_code == 404

def test_caption(tight):
    "/generate-caption captions a face photo with the captioner deployment; a file that is no image is 422."
    import skimage
    photo = io.BytesIO(); Image.fromarray(skimage.data.astronaut()).save(photo, format='JPEG')
    r = httpx.post(f'{tight}/generate-caption?seed=3', content=photo.getvalue(), headers=AUTH, timeout=300)
    assert r.status_code == 200 and {'caption', 'text', 'status', 'raw'} <= set(r.json()), r.text
    bad = httpx.post(f'{tight}/generate-caption', content=b'not a photo', headers=AUTH)
    assert bad.status_code == 422 and bad.json()['detail'] == 'the upload is not an image'

def test_a_full_queue_answers_503(tight):
    "With one place in the queue, a burst of 12 requests gets some answered and the rest refused at once: 503."
    from text_to_face.serve import BUSY
    answers = post_all(tight, [{'description': 'a man', 'seed': i, **SMALL} for i in range(12)])
    codes = [a.status_code for a in answers]
    assert 503 in codes and 200 in codes and set(codes) <= {200, 503}, codes
    busy = answers[codes.index(503)]
    assert busy.headers['content-type'] == 'application/json', busy.text
    assert busy.json()['detail'] == BUSY and busy.headers['retry-after'] == '5'
    assert httpx.get(f'{tight}/metrics', headers=AUTH).json()['answers']['503'] == codes.count(503)

def test_a_request_past_the_timeout_answers_504(tight):
    "A request that needs far longer than the 4 s timeout (four 256 px images of 500 steps: 21 s here) gets 504."
    # one 128 px image of 500 steps (4 s on a quiet machine) once answered in time: the margin must be wide
    r = httpx.post(f'{tight}/generate-image', json={'description': 'a man', 'n': 4, 'size': 256, 'steps': 500},
                   headers=AUTH, timeout=120)
    assert r.status_code == 504 and 'no answer within 4 s' in r.json()['detail'], r.text

def test_two_nodes_serve_from_the_worker(cluster, server):
    "`t2f serve --address` deployed onto the two-node cluster: the generator runs on the worker node, the head's URL answers."
    import ray
    nodes = {n['NodeID'] for n in ray.nodes() if n['Alive']}
    assert len(nodes) == 2, ray.nodes()
    _, actor = replica('t2f', 'generator')
    where = ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
    assert where in nodes and where != cluster.head_node.node_id
    r = httpx.post(f'{server}/generate-image', json={'description': 'a man', **SMALL}, headers=AUTH, timeout=300)
    assert r.status_code == 200 and len(r.json()['images']) == 1, r.text

def test_a_replica_killed_mid_request_answers_503_and_is_replaced(server):
    "The generator replica killed while it makes a request: that client gets 503 with the reason, not a hang; Ray Serve starts another replica, which answers."
    import ray
    from text_to_face.serve import LOST
    name, actor = replica('t2f', 'generator')
    slow = {'description': 'a man', 'size': 128, 'steps': 400}  # about 12 s here
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f'{server}/generate-image', json=slow, headers=AUTH, timeout=120)
        deadline = time.time() + 60
        while httpx.get(f'{server}/metrics', headers=AUTH).json()['in_flight'] < 1 and time.time() < deadline: time.sleep(0.1)
        time.sleep(1.5)  # past the batch wait, into the model call
        ray.kill(actor, no_restart=True)
        lost = pending.result()
    assert lost.status_code == 503 and lost.json()['detail'] == LOST, lost.text
    assert lost.headers['retry-after'] == '30'
    deadline = time.time() + 180
    while (r := httpx.post(f'{server}/generate-image', json={'description': 'a man', **SMALL}, headers=AUTH,
                           timeout=300)).status_code != 200 and time.time() < deadline: time.sleep(1)
    assert r.status_code == 200, r.text
    assert replica('t2f', 'generator')[0] != name

def basic(name, token):
    "An Authorization header of HTTP Basic credentials."
    return {'Authorization': 'Basic ' + base64.b64encode(f'{name}:{token}'.encode()).decode()}

def test_operators_of_the_users_file_sign_in_with_their_own_tokens(server, operators):
    "`t2f serve --users`: each operator of the dashboard's users file gets in with their name and token (Basic), and is counted by name; a wrong token, another's token or an unknown name is 401."
    _, tokens = operators
    before = httpx.get(f'{server}/metrics', headers=AUTH).json()['callers']
    for name, token in tokens.items():
        assert httpx.get(f'{server}/models', headers=basic(name, token)).status_code == 200
    smith, jones = tokens['DS Smith'], tokens['PC Jones']
    for headers in (basic('DS Smith', jones), basic('PC Jones', 'x' * 32), basic('PC Nobody', smith), basic(smith, '')):
        r = httpx.get(f'{server}/models', headers=headers)
        assert r.status_code == 401 and 'Basic' in r.headers['www-authenticate'], r.text
    after = httpx.get(f'{server}/metrics', headers=AUTH).json()['callers']
    assert {n: after.get(n, 0) - before.get(n, 0) for n in tokens} == {'DS Smith': 1, 'PC Jones': 1}

def test_img2img_on_the_server_regenerates_like_t2f_regenerate(server, tmp_path):
    "An img2img request sent at once with a text-to-image one of the same settings: each made apart (the refinement is no txt2img), the refinement's record names its source, `t2f regenerate` rebuilds it to the bit, and POST /regenerate wants the source (422 without it, or with another image)."
    from text_to_face.generate import read_record
    from text_to_face.serve import NEEDS_SOURCE
    first = httpx.post(f'{server}/generate-image', json={'description': 'a man', 'seed': 1, **SMALL}, headers=AUTH, timeout=300)
    source = saved(first.json()['images'][0], tmp_path/'source.png')
    encoded = base64.b64encode(source.read_bytes()).decode()
    refine = {'description': 'a man with a scar', 'seeds': [5, 6], 'steps': 2, 'init_image': encoded, 'strength': 0.6,
              'init_path': str(source)}
    plain, refined = post_all(server, [{'description': 'a man with a scar', 'seed': 9, **SMALL}, refine])
    assert (plain.status_code, refined.status_code) == (200, 200), (plain.text[:300], refined.text[:300])
    assert plain.json()['batch_requests'] == refined.json()['batch_requests'] == 1
    records = [i['record'] for i in refined.json()['images']]
    assert [r['kind'] for r in records] == ['img2img'] * 2 and [r['seed'] for r in records] == [5, 6]
    assert records[0]['init_image']['path'] == str(source) and records[0]['strength'] == 0.6
    made = saved(refined.json()['images'][1], tmp_path/'refined.png')
    assert read_record(made) == records[1]
    done = subprocess.run(['t2f', 'regenerate', str(made)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and 'bit-identical to' in done.stdout, done.stdout + done.stderr[-2000:]
    sent = {'png': base64.b64encode(made.read_bytes()).decode(), 'init_image': encoded}
    again = httpx.post(f'{server}/regenerate', json=sent, headers=AUTH, timeout=300)
    assert again.status_code == 200 and again.json()['identical'] is True, again.text
    alone = httpx.post(f'{server}/regenerate', content=made.read_bytes(), headers=AUTH)
    assert alone.status_code == 422 and alone.json()['detail'] == NEEDS_SOURCE
    other = httpx.post(f'{server}/regenerate', json={**sent, 'init_image': sent['png']}, headers=AUTH)
    assert other.status_code == 422 and 'sha256 differs' in other.json()['detail'], other.text

def t2f_app_check(*args, token=TOKEN, tmp):
    "`t2f app --dry-run` with `args`, the server token in the environment; (exit code, stdout, stderr)."
    cmd = ['t2f', 'app', '--data-dir', str(tmp/'app'), '--dry-run', *args]
    done = subprocess.run(cmd, env={**os.environ, 'T2F_SERVE_TOKEN': token}, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr

def test_t2f_app_checks_its_server_before_it_starts(server, tmp_path):
    "`t2f app --server` refuses, in one line, a server that is not there, a token it refuses, another model; it starts on the right one, and its page draws through the server."
    from text_to_face.serve import _free_port
    nowhere = f'http://127.0.0.1:{_free_port()}'
    cases = [((nowhere,), TOKEN, f'no t2f server at {nowhere}'), ((server,), 'x' * 32, 'token refused'),
             ((server, '--model', 'tiny-sdxl'), TOKEN, 'serves tiny-sd15, not tiny-sdxl')]
    for args, token, says in cases:
        code, _, err = t2f_app_check('--server', *args, token=token, tmp=tmp_path)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    code, out, err = t2f_app_check('--server', server, token=TOKEN, tmp=tmp_path)
    assert code == 0 and TOKEN not in out, err
    page = (tmp_path/'app'/'page'/'dashboard.ipynb').read_text()
    assert f"server={server!r}" in page and "model='tiny-sd15'" in page

def our_kernels():
    "The PIDs of the Voila kernels whose environment holds this module's token (root reads any /proc/PID/environ)."
    pids = []
    for proc in Path('/proc').iterdir():
        try:
            if b'ipykernel' in (proc/'cmdline').read_bytes() and f'T2F_SERVE_TOKEN={TOKEN}'.encode() in (proc/'environ').read_bytes():
                pids.append(int(proc.name))
        except (OSError, ValueError): pass
    return pids

def test_two_dashboards_draw_through_one_server(server, tmp_path, monkeypatch):
    "Two browser sessions of one `t2f app --server` (two kernels, two witnesses) both generate: the server's /metrics counts their requests and images, each image carries a valid record of the server's model, and no kernel has torch loaded."
    from playwright.sync_api import sync_playwright
    from test_app_browser import CHROMIUM_ARGS, open_and_describe, t2f_app
    from text_to_face.generate import check_record, read_record
    monkeypatch.setenv('T2F_SERVE_TOKEN', TOKEN)
    before = httpx.get(f'{server}/metrics', headers=AUTH).json()
    looks = {'W1': ('female', 'red'), 'W2': ('male', 'black')}
    with t2f_app(tmp_path/'app', '--server', server) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=['--headless', *CHROMIUM_ARGS])
        pages = {w: browser.new_context().new_page() for w in looks}
        for w, page in pages.items(): open_and_describe(page, url, '2026-0042', w, *looks[w])
        for page in pages.values(): assert page.locator('text=Images are made by the t2f server').count() == 1
        for page in pages.values(): page.click('button:has-text("Generate")')
        for page in pages.values(): page.wait_for_selector('text=6 candidates', timeout=300_000)
        kernels = our_kernels()
        maps = {pid: Path(f'/proc/{pid}/maps').read_text() for pid in kernels}
        browser.close()
    assert len(kernels) == 2 and not [pid for pid, m in maps.items() if 'libtorch' in m], kernels
    after = httpx.get(f'{server}/metrics', headers=AUTH).json()
    assert after['images'] - before['images'] == 12  # 6 candidates each, in requests of up to 3
    assert after['callers']['token'] - before['callers'].get('token', 0) >= 4
    model_hash = httpx.get(f'{server}/models', headers=AUTH).json()['model_hash']
    pngs = sorted((tmp_path/'app'/'cases').glob('*/*.png'))
    assert len(pngs) == 12
    for png in pngs:
        record = read_record(png)
        check_record(record)
        assert record['model_hash'] == model_hash and record['statement'].startswith('AI-generated')
