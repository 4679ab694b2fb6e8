"""The HTML report of a small run, rendered by headless Chromium.

Checks that the page loads without console messages (the report has no script, so any
console line is the browser complaining: a blocked or broken resource, a CSP violation),
that every image decodes (``naturalWidth > 0`` once the load event, which waits for all
images, has fired), and that a screenshot can be taken.

The page itself stays script-free; the image check runs in a test-only copy that adds a
small inline script (and allows inline scripts in its Content-Security-Policy) which
writes ``ok:<images>:bad:<undecodable>:errors:<error events>`` into ``document.title``,
read back with ``--dump-dom``. Needs Debian's ``chromium`` (skipped without it; set
``GRAPHCLUST_CHROMIUM`` to use another binary).
"""

import os
import re
import shutil
import subprocess

import pytest

from graphclust.inspect import load_inspection_input, write_report


def _chromium() -> str | None:
    env = os.environ.get("GRAPHCLUST_CHROMIUM", "").strip()
    if env:
        return env if shutil.which(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary found (CI installs it: apt-get install -y chromium)",
)

_CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', function () { window.__errors.push(1); }, true);
window.addEventListener('load', function () {
  // the load event waits for every image; a broken one is complete with naturalWidth 0
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  document.title = 'ok:' + imgs.length + ':bad:' + bad.length + ':errors:' + window.__errors.length;
});
</script>"""


def _run_chromium(profile, *args, timeout=90):
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=10000", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _check_copy(page: str) -> str:
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert meta, "the report must carry a Content-Security-Policy"
    relaxed = meta.group(0).replace("default-src 'none';",
                                    "default-src 'none'; script-src 'unsafe-inline';")
    return page.replace(meta.group(0), relaxed + _CHECK_SCRIPT)


def test_report_renders_in_chromium(tmp_path, run_dir):
    out = write_report(load_inspection_input(run_dir), tmp_path / "report")
    page = (out / "index.html").read_text()
    n_images = len(re.findall(r"<img ", page))
    assert n_images == len(list(out.glob("*.png"))) >= 8

    # 1. the report as shipped: loads with no console message, screenshot taken
    shot = tmp_path / "screenshot.png"
    res = _run_chromium(tmp_path / "profile1", f"--screenshot={shot}", "--window-size=1280,4000",
                        (out / "index.html").as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert _console_lines(res.stderr) == [], _console_lines(res.stderr)
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG")
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kB

    # 2. a test-only copy with the decode check: every image decodes, no error event
    check = tmp_path / "check.html"
    check.write_text(_check_copy(page))
    res = _run_chromium(tmp_path / "profile2", "--dump-dom", check.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    title = re.search(r"<title>([^<]*)</title>", res.stdout)
    assert title is not None, res.stdout[:500]
    assert title.group(1) == f"ok:{n_images}:bad:0:errors:0"
    assert _console_lines(res.stderr) == [], _console_lines(res.stderr)


def test_check_detects_a_broken_image(tmp_path, run_dir):
    """The checker itself: a corrupted image and a network URL are caught."""
    out = write_report(load_inspection_input(run_dir), tmp_path / "report")
    page = (out / "index.html").read_text()
    page = page.replace('src="data:image/png;base64,iVBOR', 'src="data:image/png;base64,XXXX', 1)
    page = page.replace("</main>", '<img src="http://127.0.0.1:9/x.png"></main>')
    check = tmp_path / "check.html"
    check.write_text(_check_copy(page))
    res = _run_chromium(tmp_path / "profile", "--dump-dom", check.as_uri())
    title = re.search(r"<title>([^<]*)</title>", res.stdout).group(1)
    n = len(re.findall(r"<img ", page))
    assert title.startswith(f"ok:{n}:bad:2:")
    assert any("Content Security Policy" in line for line in _console_lines(res.stderr))
