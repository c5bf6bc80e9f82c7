"The dashboard in a real browser: Voila serves it, headless Chromium (Debian's) is driven by Playwright."
import contextlib, re, socket, sqlite3, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import ROOT

ARTIFACTS = ROOT/'test-artifacts'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--disable-quic']

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@contextlib.contextmanager
def t2f_app(data, *args):
    "`t2f app` on the tiny model, on a free localhost port, with more `args`; its url."
    port = free_port()
    proc = subprocess.Popen(['t2f', 'app', '--model', 'tiny-sd15', '--port', str(port), '--data-dir', str(data), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.time() + 120
    while time.time() < end:
        try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
        except OSError: time.sleep(0.5)
    else: proc.kill(); pytest.fail('voila did not start: ' + proc.stdout.read()[-2000:])
    try: yield f'http://127.0.0.1:{port}/'
    finally: proc.terminate(); proc.wait(20)

@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "`t2f app` on the tiny model, on a free localhost port; (url, data folder)."
    data = tmp_path_factory.mktemp('app')
    with t2f_app(data) as url: yield url, data

def text_input(page, label): return page.locator(f'.widget-text:has(label:text-is("{label}")) input')

def open_and_describe(page, url, case, witness, sex, hair):
    "Open a witness's case record, fill the form and wait for the description it makes."
    page.goto(url); page.wait_for_selector('button:has-text("Open case")', timeout=180_000)
    text_input(page, 'case no.').fill(case); text_input(page, 'witness').fill(witness)
    text_input(page, 'operator').fill('PW'); page.click('button:has-text("Open case")')
    page.locator('.widget-dropdown:has(label:text-is("sex")) select').select_option(sex)
    page.locator('.widget-dropdown:has(label:text-is("hair colour")) select').select_option(hair)
    page.click('button:has-text("Describe")')
    page.wait_for_function(f"() => [...document.querySelectorAll('textarea')]"
                           f".some(t => t.value.includes('{hair} hair'))")

def texts(page): return ' '.join(page.locator('textarea').evaluate_all('t => t.map(a => a.value)'))

def candidate_ids(page):
    "The ids of the candidates in the array shown, in order (their labels read '#12 · seed 3')."
    labels = page.locator('small:has-text("seed")').all_inner_texts()
    return [int(re.match(r'#(\d+)', t).group(1)) for t in labels]

def shown_ids(page):
    "Every image id the page shows: candidate labels ('#12 · seed 3'), history thumbnails ('#12 seed 3')."
    return {int(i) for i in re.findall(r'#(\d+)\s*(?:·\s*)?seed', page.content())}

def mark_final(page, k):
    "Choose candidate `k` of the array alone and mark it final; its id."
    toggles, image_id = page.locator('button:has-text("choose")'), candidate_ids(page)[k]
    if k > 1: toggles.nth(k - 1).click()  # un-choose the one marked before: only `k` is chosen
    toggles.nth(k).click(); page.click('button:has-text("Mark final")')
    page.wait_for_selector(f'text=#{image_id} is the final composite')
    return image_id

def test_two_witnesses_in_two_browsers(served):
    "Two browsers (two Voila kernels) build two witnesses' composites at the same time, steps interleaved."
    from playwright.sync_api import sync_playwright
    url, data = served
    ARTIFACTS.mkdir(exist_ok=True)
    looks = {'W1': ('female', 'red'), 'W2': ('male', 'black')}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        size = {'width': 1280, 'height': 1000}
        pages = {w: browser.new_context(viewport=size).new_page() for w in looks}
        for w, page in pages.items(): open_and_describe(page, url, '2026-0042', w, *looks[w])
        for page in pages.values(): page.click('button:has-text("Generate")')  # both generate at once
        for w, page in pages.items():
            page.wait_for_selector('text=6 candidates', timeout=300_000)
            assert page.locator('text=AI-generated: not a real person').count() >= 6
            page.screenshot(path=str(ARTIFACTS/f'witness-{w}-1-array.png'), full_page=True)
            toggles = page.locator('button:has-text("choose")')
            toggles.nth(0).click(); toggles.nth(3).click()
        for page in pages.values(): page.click('button:has-text("Next generation")')
        for page in pages.values(): page.wait_for_selector('text=step 2: evolve', timeout=300_000)
        for page in pages.values(): mark_final(page, 1)
        final = {w: mark_final(page, 2) for w, page in pages.items()}  # replaces the first final
        for page in pages.values(): page.click('button:has-text("Export case")')
        for w, page in pages.items():
            page.wait_for_selector('text=exported to')
            page.screenshot(path=str(ARTIFACTS/f'witness-{w}-2-evolved.png'), full_page=True)
        red = lambda page: page.content().count('4px solid #c22')  # the final's outline in the history
        shown = {w: (shown_ids(page), texts(page), red(page)) for w, page in pages.items()}
        browser.close()
    db = sqlite3.connect(data/'cases.db')
    join = 'from images i join cases c on c.id = i.case_id'
    ids = {w: {r[0] for r in db.execute(f'select i.id {join} where c.witness=?', (w,))} for w in looks}
    assert {w: len(v) for w, v in ids.items()} == {'W1': 12, 'W2': 12} and not ids['W1'] & ids['W2']
    finals = db.execute(f'select c.witness, i.id {join} where i.final = 1').fetchall()
    assert sorted(finals) == sorted(final.items())  # one final per case: the one marked last
    (w1_ids, w1_text, w1_red), (w2_ids, w2_text, w2_red) = shown['W1'], shown['W2']
    assert w1_ids == ids['W1'] and w2_ids == ids['W2']  # its own witness's images, none of the other's
    assert 'red hair' in w1_text and 'black hair' not in w1_text
    assert 'black hair' in w2_text and 'red hair' not in w2_text
    assert w1_red == w2_red == 1  # one face outlined as final in each history
    exports = {re.search(r'witness (W\d)', p.read_text()).group(1): p.read_text()
               for p in (data/'exports').glob('*/summary.html')}
    assert sorted(exports) == ['W1', 'W2']
    for w, page in exports.items():
        assert re.findall(r'#(\d+) seed \d+ FINAL', page) == [str(final[w])]  # that final alone
        assert page.count('class="FINAL"') == 1
        assert {int(i) for i in re.findall(r'#(\d+) seed', page)} == ids[w]

def test_operators_in_two_browsers(tmp_path):
    "Two operators signed in by their own tokens: the second is refused the first's case, even naming the first."
    from playwright.sync_api import sync_playwright
    users = tmp_path/'users.json'
    tokens = {n: subprocess.run(['t2f', 'app-user', n, '--users', str(users)], capture_output=True, text=True,
                                check=True).stdout.split()[-1] for n in ('DS Smith', 'PC Jones')}
    with t2f_app(tmp_path/'app', '--users', str(users)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        pages = {n: browser.new_context().new_page() for n in tokens}
        for n, page in pages.items():
            page.goto(f'{url}?token={tokens[n]}'); page.wait_for_selector('button:has-text("Open case")', timeout=180_000)
            assert text_input(page, 'operator').input_value() == n and text_input(page, 'operator').is_disabled()
            text_input(page, 'case no.').fill('2026-0042'); text_input(page, 'witness').fill('W1')
        pages['DS Smith'].click('button:has-text("Open case")')
        pages['DS Smith'].wait_for_selector('text=case 2026-0042, witness W1')
        jones = pages['PC Jones']  # enables the operator field and types the other operator's name
        text_input(jones, 'operator').evaluate('e => e.disabled = false'); text_input(jones, 'operator').fill('DS Smith')
        jones.click('button:has-text("Open case")')
        jones.wait_for_selector('text=belongs to another operator')
        browser.close()
    with sqlite3.connect(tmp_path/'app'/'cases.db') as db:
        assert db.execute('select operator, action from audit').fetchall() == [('DS Smith', 'open'), ('PC Jones', 'refused')]
