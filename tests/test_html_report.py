"""`runs show --html`: one self-contained page, loaded in a real headless Chromium.

`.ci/run` installs Debian's `chromium` when it is missing, so this test always runs in CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import flowrun

from .test_cli import cli, write

BLUEPRINT = """\
id: report
context: {xs: [0, 1, 2, 3, 4, 5]}
nodes:
  - {id: hello, uses: tests.printing_nodes.chatty}
  - id: w
    batch: {uses: tests.printing_nodes.echo_item, inputKey: xs, maxFailures: 1, concurrency: 3}
  - {id: bad, uses: tests.printing_nodes.loud_failure, inputs: hello}
edges:
  - {source: hello, target: bad}
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is missing: `apt-get install -y chromium` (.ci/run does it)"
    return found


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--virtual-time-budget=3000", *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_html_report_renders_a_bar_per_node_in_a_real_browser(tmp_path: Path) -> None:
    bp = write(tmp_path, "report.yaml", BLUEPRINT)
    report = flowrun.run(bp, state_dir=tmp_path / "s")
    assert report.status == "failed"
    page = tmp_path / "report.html"
    out = cli("runs", "show", "latest", "--html", page, "--state-dir", tmp_path / "s")
    assert out.code == 0
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?https?:""", text)  # nothing fetched
    assert "<script" in text and text.count("<script") == 1

    dom = _browser("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    # the page's script counts the bars the browser laid out with a non-zero width
    rendered = re.search(r'id="timeline"[^>]*data-rendered="(\d+)"', dom.stdout)
    assert rendered is not None, dom.stdout[:2000]
    assert int(rendered.group(1)) == 3  # hello, w, bad
    for node in ("hello", "w", "bad"):
        assert f'data-node="{node}"' in dom.stdout
    assert 'class="concurrency" data-batch="w"' in dom.stdout
    assert "ValueError: loud failure" in dom.stdout  # errors with tracebacks
    assert "Traceback (most recent call last)" in dom.stdout
    assert "item 3 says hi" in dom.stdout  # the failed item's captured output

    shot = tmp_path / "report.png"
    taken = _browser("--window-size=1280,900", f"--screenshot={shot}", page.as_uri())
    assert taken.returncode == 0, taken.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_escapes_every_value(tmp_path: Path) -> None:
    text = "id: esc\nnodes:\n  - {id: m, uses: tests.printing_nodes.markup}\n"
    flowrun.run(write(tmp_path, "esc.yaml", text), state_dir=tmp_path / "s")
    page = tmp_path / "esc.html"
    cli("runs", "show", "latest", "--html", page, "--state-dir", tmp_path / "s")
    html = page.read_text()
    assert "<script>alert" not in html and "<b>not bold" not in html
    assert "&lt;script&gt;alert(&#x27;printed&#x27;)&lt;/script&gt;" in html
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; more" in html
