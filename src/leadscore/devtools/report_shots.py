"""Full-page PNG screenshots of HTML reports with headless Chromium, to look at what a report
shows without a browser session::

    python -m leadscore.devtools.report_shots REPORT.html [REPORT.html ...] --out DIR

Each report becomes ``DIR/<parent>-<name>.png`` (``models/leadscore/report.html`` ->
``leadscore-report.png``). Chromium's headless ``--screenshot`` takes the window, not the
page, so the window is made taller than the page is estimated to be (embedded images and
table rows) and the empty background below the page is cropped off afterwards. Chromium
runs with a fresh profile in a temporary directory, no network services, and no sandbox (it
runs as root in containers and CI).
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = 1280
MAX_HEIGHT = 16_000  # beyond about 16k pixels Chromium's compositor gives up on one surface
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CONTENT_WIDTH = 1180  # the report CSS's max-width: images wider than this are scaled down


class ShotError(RuntimeError):
    """No browser, no report, or the browser failed."""


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise ShotError("chromium not found on PATH (Debian/Ubuntu: apt-get install chromium); "
                    "it is needed to take report screenshots")


def _png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def estimate_height(text: str, width: int = WIDTH) -> int:
    """A generous guess of the page height in CSS pixels: embedded images at their shown size,
    table rows, headings and paragraphs."""
    shown = min(width - 60, CONTENT_WIDTH)
    height = 400
    for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', text):
        w, h = _png_size(base64.b64decode(b64[:64] + "=" * (-len(b64[:64]) % 4)))
        height += (h * min(1.0, shown / w) if w else 0) + 60
    height += 34 * text.count("<tr") + 60 * text.count("<h2") + 40 * text.count("<h3")
    height += 30 * (text.count("<p") + text.count("<li") + text.count('class="card"') // 3)
    return int(height * 1.3) + 600


def _crop_background(path: Path) -> None:
    """Crop the rows of uniform background colour at the bottom of the screenshot."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    background = rgb[-1, 0]
    uniform = (rgb == background).all(axis=(1, 2))
    content = np.flatnonzero(~uniform)
    bottom = int(content[-1]) + 1 + 40 if len(content) else 1
    if bottom < rgb.shape[0]:
        from PIL import Image as _Image

        _Image.fromarray(rgb[:bottom]).save(path, optimize=True)


def shoot(report: Path, out: Path, chromium: str | None = None, height: int | None = None,
          timeout: float = 120) -> Path:
    """One full-page screenshot of ``report`` into ``out`` (a PNG path); returns ``out``."""
    report = Path(report).resolve()
    if not report.is_file():
        raise ShotError(f"{report}: no such report")
    chromium = chromium or find_chromium()
    height = height or min(MAX_HEIGHT, estimate_height(report.read_text(encoding="utf-8", errors="replace")))
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="leadscore-shot-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={WIDTH},{height}",
               f"--screenshot={out}", report.as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ShotError(f"{report}: chromium did not finish within {timeout:g} s") from exc
    if not out.is_file() or out.stat().st_size == 0:
        raise ShotError(f"{report}: chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-1500:]}")
    _crop_background(out)
    return out


def shot_name(report: Path) -> str:
    report = Path(report).resolve()
    return f"{report.parent.name}-{report.stem}.png" if report.parent.name else f"{report.stem}.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leadscore.devtools.report_shots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="HTML report files")
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNG screenshots")
    parser.add_argument("--height", type=int, default=None, help="window height in pixels (default: estimated)")
    args = parser.parse_args(argv)
    try:
        chromium = find_chromium()
        missing = [str(r) for r in args.reports if not r.is_file()]
        if missing:
            raise ShotError(f"no such report: {', '.join(missing)}")
        for report in args.reports:
            out = shoot(report, args.out / shot_name(report), chromium, args.height)
            print(f"{report} -> {out}")
    except ShotError as exc:
        print(f"report_shots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
