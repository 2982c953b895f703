"""The HTML reports open cleanly in a real browser: every figure decodes, nothing on the console.

Needs Chromium (`apt-get install chromium`); where there is none the test says so and is skipped.
"""

import re
import shutil
import subprocess

import pytest
from conftest import run_cli

from mpibench.analysis import synthetic as S

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium to run this check")

#: Appended to a copy of the report: say, once the page has loaded, how many images decoded.
PROBE = ("<script>window.addEventListener('load', () => { const i = [...document.images]; console.log("
         "'images decoded ' + i.filter(x => x.complete && x.naturalWidth > 0).length + '/' + i.length); });</script>")


def console(page) -> list[str]:
    """What the page wrote to the browser console while headless Chromium loaded it."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert "</html>" in proc.stdout, proc.stderr[-2000:]
    return re.findall(r":CONSOLE[^\]]*\] (.*)", proc.stderr)


@pytest.mark.parametrize("several", [False, True], ids=["one run", "several runs"])
def test_the_report_opens_cleanly_in_a_browser(tmp_path, several):
    a = S.write(tmp_path / "a.h5", S.sweep(seed=1), label="a")
    b = S.write(tmp_path / "b.h5", S.sweep(seed=2), label="b")
    out = tmp_path / "report"
    proc = run_cli([a, b, "--out", out] if several else [a, "--out", out], module="mpibench.analyze")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = out / "report.html"
    assert console(report) == []
    probed = tmp_path / "probed.html"
    html = report.read_text()
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    n = html.count("<img ")
    assert n >= 2 and [line.split(", source:")[0] for line in console(probed)] == [f'"images decoded {n}/{n}"']
