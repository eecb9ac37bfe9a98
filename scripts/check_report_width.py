"""Check that a run's report.html fits a browser window of a given width (default 1280 px).

Loads the report in headless Chromium at that width and measures the page: the document must not be wider
than the window, and no table may be wider than its box (a table that only fits by scrolling sideways hides
columns). Optionally saves a screenshot.

    python scripts/check_report_width.py runs/my_run [--width 1280] [--screenshot shot.png]

Exit 0 when the page fits, 1 when it does not, 2 when no Chromium is installed (``chromium`` or
``chromium-browser`` or ``google-chrome`` on PATH; on Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>
window.addEventListener('load', () => {
  const wide = [...document.querySelectorAll('table')].filter(t => {
    const w = t.closest('.tw') || t;
    return w.getBoundingClientRect().right > window.innerWidth + 1 || w.scrollWidth > w.clientWidth + 1;
  }).length;
  document.body.setAttribute('data-probe',
    `${document.documentElement.scrollWidth} ${window.innerWidth} ${document.querySelectorAll('table').length} ${wide}`);
});
</script>"""


def browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def measure(html: Path, width: int = 1280, screenshot: Path | None = None) -> tuple[int, int, int, int]:
    """``(document width, window width, tables, tables past the window's edge or scrolling sideways)``."""
    exe = browser()
    if exe is None:
        raise FileNotFoundError("no Chromium on PATH")
    text = html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(text, encoding="utf-8")
        flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--window-size={width},900", f"--user-data-dir={tmp}/profile"]
        out = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        if screenshot is not None:
            subprocess.run([*flags, f"--screenshot={Path(screenshot).resolve()}", page.as_uri()],
                           capture_output=True, timeout=120)
    m = re.search(r'data-probe="(\d+) (\d+) (\d+) (\d+)"', out.stdout)
    if not m:
        raise RuntimeError(f"the browser did not run the probe: {out.stderr.strip()[-300:]}")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--screenshot", type=Path)
    args = ap.parse_args()
    html = args.run_dir / "report.html" if args.run_dir.is_dir() else args.run_dir
    try:
        doc, window, tables, past = measure(html, args.width, args.screenshot)
    except FileNotFoundError:
        print("no Chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    ok = doc <= window and past == 0
    print(f"{html}: page {doc} px in a {window} px window, {tables} tables, {past} too wide for their box: "
          f"{'fits' if ok else 'TOO WIDE'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
