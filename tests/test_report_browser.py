"""report.html in a real browser: Debian's Chromium, headless, driven by Playwright, over the
report of a real smoke sweep (`python jobs/sweep_zdim.py --smoke`, z_dim 1 and 10, run from an
empty folder with the default storage ./ganray_results), opened the way users open it: the file
itself (file://), in place and as a lone download. Every figure, sample grid and GIF decodes;
no console or page errors, no failed request; nothing overflows sideways at a laptop's 1,400
and a phone's 400 CSS pixels, nor at the widths between (the trials table turns into cards
rather than scroll); the reasons wrap; each trial's row shows its last sample grid.

Full-page screenshots are kept as test artifacts: test-artifacts/report_1400.png and
test-artifacts/report_400.png (gitignored). The module skips when Chromium or playwright is
missing; .ci/run installs Debian's chromium before `make test`, so CI runs it.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_sweep import JOB, SWEEP_ENV, tail

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
# Headless on a closed network as root: no sandbox, no GPU, nothing that phones home. Playwright
# gives every launch a fresh temporary profile (--user-data-dir) of its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TRIALS = ("z1-s0", "z10-s0")
N_FIGURES = 4  # class_histograms, verdict_heatmap, coverage_fcd, loss_curves
LAPTOP, PHONE = 1400, 400
THUMB_PX = 160  # ganray.report.render.THUMB_PX: the largest side of a grid in the table


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> Path:
    """report.html of a real two-trial smoke sweep, written by the sweep itself."""
    cwd = tmp_path_factory.mktemp("browser")
    r = subprocess.run([sys.executable, str(ROOT / JOB), "--smoke", "--set", "sweep.z_dim=[1,10]"],
                       capture_output=True, text=True, timeout=900, cwd=cwd, env={**os.environ, **SWEEP_ENV})
    assert r.returncode == 0, tail(r)
    printed = re.findall(r"^report: (.*report\.html)$", r.stdout, re.M)
    page = cwd / "ganray_results" / "zdim-mnist-local-smoke" / "report.html"  # the default, relative storage
    assert printed and Path(printed[-1]) == page and page.is_file(), tail(r)
    return page


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """One tab on report.html at a viewport width, with every console message, page error and
    failed request it produced."""

    def __init__(self, browser, url: str, width: int, phone: bool = False):
        self.context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=phone,
                                           has_touch=phone, device_scale_factor=1)
        self.page = self.context.new_page()
        self.console, self.errors, self.failed = [], [], []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url[:120]))
        self.page.goto(url, wait_until="load")

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def problems(self) -> list:
        return [m for m in self.console if m[0] == "error"] + self.errors + self.failed

    def close(self) -> None:
        self.context.close()


IMAGES = """async () => {
  const imgs = [...document.images];
  const decoded = await Promise.all(imgs.map(i => i.decode().then(() => true, () => false)));
  return imgs.map((i, k) => ({alt: i.alt, type: i.currentSrc.slice(0, 14), decoded: decoded[k],
                               complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}));
}"""

OVERFLOW = """async () => {
  await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));  // resize handled, laid out
  const W = window.innerWidth, t = document.querySelector('table.trials-table');
  const beyond = [...document.body.querySelectorAll('*')].filter(e => {
    const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > W + 0.5 || r.left < -0.5);
  }).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''));
  return {inner: W, scroll: document.scrollingElement.scrollWidth, beyond: beyond.slice(0, 8),
          table: t.offsetWidth, room: t.parentElement.clientWidth,
          stacked: getComputedStyle(t.querySelector('tbody tr')).display !== 'table-row'};
}"""

REASONS = """() => [...document.querySelectorAll('table.trials-table td.reasons')].map(td => {
  const li = [...td.querySelectorAll('li')].sort((a, b) => b.textContent.length - a.textContent.length)[0];
  const cs = getComputedStyle(li);
  return {white: getComputedStyle(td).whiteSpace, li_white: cs.whiteSpace, chars: li.textContent.length,
          height: li.getBoundingClientRect().height, line: parseFloat(cs.lineHeight),
          overflows: li.scrollWidth > li.clientWidth + 1 || td.scrollWidth > td.clientWidth + 1};
})"""

THUMBNAILS = """() => [...document.querySelectorAll('table.trials-table tbody tr')].map(tr => {
  const img = tr.querySelector('td.samples img'); if (!img) return {trial: tr.querySelector('td.trial').textContent};
  const r = img.getBoundingClientRect();
  return {trial: tr.querySelector('td.trial').textContent, src: img.getAttribute('src'), alt: img.alt,
          width: img.getAttribute('width'), height: img.getAttribute('height'), w: img.naturalWidth,
          shown: [r.width, r.height], right: r.right, link: img.closest('a') && img.closest('a').hash};
})"""


def last_grid(page: Path, trial: str) -> bytes:
    grids = sorted((page.parent / "trials" / trial / "samples").glob("step_*.png"))
    assert grids, f"{trial}: the sweep wrote no sample grid"
    return grids[-1].read_bytes()


def check_no_overflow(p: Page, width: int) -> dict:
    o = p.js(OVERFLOW)
    assert o["inner"] == width, o  # the phone honours <meta name="viewport"> (without it: 980)
    assert o["scroll"] <= o["inner"], f"the page scrolls sideways at {width} px: {o}"
    assert not o["beyond"], f"elements reach past the viewport at {width} px: {o}"
    assert o["table"] <= o["room"], f"the trials table is wider than its column at {width} px: {o}"
    return o


@pytest.mark.slow
@pytest.mark.parametrize("width", [LAPTOP, PHONE], ids=["laptop-1400", "phone-400"])
def test_report_html_from_the_file_at_laptop_and_phone_width(sweep_report, browser, width):
    p = Page(browser, sweep_report.as_uri(), width, phone=width == PHONE)
    try:
        # every image decodes: the figures, each trial's grid (in its row and on its card), each GIF
        images = p.js(IMAGES)
        assert len(images) == N_FIGURES + 3 * len(TRIALS), images
        bad = [i for i in images if not (i["decoded"] and i["complete"] and i["w"] > 0 and i["h"] > 0)]
        assert not bad, bad
        assert [i["type"] for i in images].count("data:image/gif") == len(TRIALS), images
        assert all(i["alt"] for i in images), images

        o = check_no_overflow(p, width)
        # a laptop reads the trials as a table; a phone as one card per trial
        assert o["stacked"] == (width == PHONE), o

        # the reasons wrap inside their cell: the longest reason takes more than one line
        reasons = p.js(REASONS)
        assert len(reasons) == len(TRIALS)
        for r in reasons:
            assert r["white"] not in ("nowrap", "pre") and r["li_white"] not in ("nowrap", "pre"), r
            assert not r["overflows"], r
        longest = max(reasons, key=lambda r: r["chars"])
        assert longest["chars"] >= 60, f"the smoke sweep's reasons are shorter than expected: {reasons}"
        assert longest["height"] >= 1.8 * longest["line"], f"the longest reason does not wrap at {width} px: {longest}"

        # each row shows its trial's last sample grid, from the file, at a sensible size
        thumbs = p.js(THUMBNAILS)
        assert [t["trial"] for t in thumbs] == list(TRIALS), thumbs
        for t in thumbs:
            assert t.get("src", "").startswith("data:image/png;base64,"), t
            assert base64.b64decode(t["src"].split(",", 1)[1]) == last_grid(sweep_report, t["trial"]), t
            assert t["trial"] in t["alt"] and "step" in t["alt"], t
            assert t["width"] and t["height"], f"no width/height attributes: {t}"
            assert int(t["width"]) == min(t["w"], THUMB_PX), t
            assert 60 <= t["shown"][0] <= THUMB_PX + 1 and t["shown"][1] > 0 and t["right"] <= width, t
            assert t["link"] == f"#samples-{t['trial']}", t  # to the trial's card: the grid and the GIF

        assert not p.problems(), p.problems()
        ARTIFACTS.mkdir(exist_ok=True)
        p.page.screenshot(path=str(ARTIFACTS / f"report_{width}.png"), full_page=True)
    finally:
        p.close()


@pytest.mark.slow
def test_no_width_between_phone_and_laptop_scrolls_sideways(sweep_report, browser):
    """One tab resized from a wide screen down to a small phone and back (the table stacks and
    unstacks as it goes)."""
    p = Page(browser, sweep_report.as_uri(), 1920)
    try:
        layouts = {}
        for width in (1920, 1280, 1100, 1024, 900, 768, 600, 360, 1400):
            p.page.set_viewport_size({"width": width, "height": 900})
            layouts[width] = check_no_overflow(p, width)["stacked"]
        assert not layouts[1920] and not layouts[1400] and layouts[360], layouts
        assert not p.problems(), p.problems()
    finally:
        p.close()


@pytest.mark.slow
def test_report_html_downloaded_alone_still_shows_every_image(sweep_report, browser, tmp_path):
    """docs/report.md: report.html opens offline after downloading just that one file."""
    alone = tmp_path / "Downloads" / "report.html"
    alone.parent.mkdir()
    shutil.copyfile(sweep_report, alone)
    p = Page(browser, alone.as_uri(), LAPTOP)
    try:
        images = p.js(IMAGES)
        assert len(images) == N_FIGURES + 3 * len(TRIALS)
        assert all(i["decoded"] and i["w"] > 0 for i in images), images
        assert not p.problems(), p.problems()
    finally:
        p.close()
