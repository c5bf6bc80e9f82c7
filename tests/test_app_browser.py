"The dashboard in a real browser: Voila serves it, headless Chromium (Debian's) is driven by Playwright."
import socket, sqlite3, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import ROOT

ARTIFACTS = ROOT/'test-artifacts'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--disable-quic']

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "`t2f app` on the tiny model, on a free localhost port; (url, data folder)."
    data, port = tmp_path_factory.mktemp('app'), free_port()
    proc = subprocess.Popen(['t2f', 'app', '--model', 'tiny-sd15', '--port', str(port),
                             '--data-dir', str(data)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.time() + 120
    while time.time() < end:
        try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
        except OSError: time.sleep(0.5)
    else: proc.kill(); pytest.fail('voila did not start: ' + proc.stdout.read()[-2000:])
    yield f'http://127.0.0.1:{port}/', data
    proc.terminate(); proc.wait(20)

def text_input(page, label): return page.locator(f'.widget-text:has(label:text-is("{label}")) input')

def build_composite(page, url, case, witness, shot):
    "Open a case, fill the form, generate, choose two faces, evolve, mark final, export; screenshots on the way."
    page.goto(url); page.wait_for_selector('button:has-text("Open case")', timeout=180_000)
    text_input(page, 'case no.').fill(case); text_input(page, 'witness').fill(witness); text_input(page, 'operator').fill('PW')
    page.click('button:has-text("Open case")')
    page.locator('.widget-dropdown:has(label:text-is("sex")) select').select_option('female')
    page.locator('.widget-dropdown:has(label:text-is("hair colour")) select').select_option('red')
    page.click('button:has-text("Describe")')
    page.wait_for_function("() => [...document.querySelectorAll('textarea')].some(t => t.value.includes('red hair'))")
    page.click('button:has-text("Generate")')
    page.wait_for_selector('text=6 candidates', timeout=300_000)
    assert page.locator('text=AI-generated: not a real person').count() >= 6
    page.screenshot(path=str(ARTIFACTS/f'{shot}-1-array.png'), full_page=True)
    toggles = page.locator('button:has-text("choose")')
    toggles.nth(0).click(); toggles.nth(3).click()
    page.click('button:has-text("Next generation")')
    page.wait_for_selector('text=step 2: evolve', timeout=300_000)
    page.locator('button:has-text("choose")').nth(1).click()
    page.click('button:has-text("Mark final")'); page.wait_for_selector('text=is the final composite')
    page.click('button:has-text("Export case")'); page.wait_for_selector('text=exported to')
    page.screenshot(path=str(ARTIFACTS/f'{shot}-2-evolved.png'), full_page=True)

def test_two_witnesses_in_two_browsers(served):
    "Two browser contexts build two witnesses' composites at once; neither sees the other's images."
    from playwright.sync_api import sync_playwright
    url, data = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path='/usr/bin/chromium', args=CHROMIUM_ARGS)
        a, b = (browser.new_context(viewport={'width': 1280, 'height': 1000}).new_page() for _ in range(2))
        build_composite(a, url, '2026-0042', 'W1', 'witness1')
        build_composite(b, url, '2026-0042', 'W2', 'witness2')
        browser.close()
    db = sqlite3.connect(data/'cases.db')
    per_case = dict(db.execute('select c.witness, count(i.id) from cases c join images i on i.case_id = c.id group by c.id'))
    assert per_case == {'W1': 12, 'W2': 12}
    assert db.execute('select count(*) from images where final = 1').fetchone()[0] == 2
    paths = {w: {r[0] for r in db.execute('select i.path from images i join cases c on c.id=i.case_id where c.witness=?', (w,))} for w in ('W1', 'W2')}
    assert not paths['W1'] & paths['W2'] and all(Path(p).parent.name != Path(q).parent.name for p in paths['W1'] for q in paths['W2'])
    exports = sorted((data/'exports').glob('*/summary.html'))
    assert len(exports) == 2 and 'FINAL' in exports[0].read_text()
