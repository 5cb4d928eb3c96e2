"""epsfinder.report and `epsfinder report`: the page's content, then the page in a real headless browser."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from epsfinder import EpsilonRange
from epsfinder.cli import main
from epsfinder.report import write_report
from test_plots import digits_result, make_sweep

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_COPY = Path("/tmp/epsfinder_report.png")


@pytest.fixture(scope="module")
def result() -> EpsilonRange:
    return digits_result()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, result) -> Path:
    """A run folder as the CLI leaves it: result.json and sweep.json (β2 varies), with report.html written."""
    d = tmp_path_factory.mktemp("run")
    result.to_json(d / "result.json")
    (d / "sweep.json").write_text(json.dumps(make_sweep(result, best_eps=result.upper)))
    write_report(d)
    return d


def _page(d: Path) -> str:
    return (d / "report.html").read_text(encoding="utf-8")


def _figure_ids(page: str) -> list[str]:
    return re.findall(r'<figure[^>]* id="fig-([\w-]+)"', page)


# ---------------------------------------------------------------------------------------------- content
def test_report_holds_range_advice_tables_and_figures(run_dir, result):
    page = _page(run_dir)
    assert page.startswith("<!DOCTYPE html>")
    assert f"ε ∈ [{_n(result.lower)}, {_n(result.upper)}]" in page
    for note in result.recommend().notes:
        assert html.escape(note, quote=True) in page
    for ly in result.layers:
        assert f"<td>{html.escape(ly.name)}</td>" in page
    assert "non-finite" in page and "zeros" in page and "Adaptability level" in page
    assert _figure_ids(page) == ["histogram", "layers", "evolution", "adaptability", "heatmap-lr-eps",
                                 "heatmap-beta2-eps"]
    assert "Best trials" in page and "Failed trials" in page and "diverged (loss is nan)" in page
    best = json.loads((run_dir / "sweep.json").read_text())["best"]
    assert f"trial #{best['number']}" in page


def _n(x: float) -> str:
    from epsfinder.plots import _num

    return _num(x)


def test_report_is_self_contained(run_dir):
    page = _page(run_dir)
    assert "<script" not in page.lower()
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs]
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert len(images) == 6
    svg = base64.b64decode(images[0]).decode()
    assert "<svg" in svg and "http://www.w3.org/2000/svg" in svg  # the namespace only, not a request


def test_report_of_a_result_alone_in_png(tmp_path, result):
    path = write_report(tmp_path, result=result, figure_format="png")
    assert path == tmp_path / "report.html"
    page = _page(tmp_path)
    assert page.count('src="data:image/png;base64,') == 4  # no sweep: the estimate's four figures
    assert 'id="sweep"' not in page and not (tmp_path / "figures").exists()


def test_a_sweep_alone_brings_its_range(tmp_path, result):
    from epsfinder.report import _load

    (tmp_path / "sweep.json").write_text(json.dumps(make_sweep(result, best_eps=1e-6)))
    r, sw = _load(tmp_path, None, None)
    assert r is not None and (r.lower, r.upper, r.step) == (result.lower, result.upper, result.step)
    assert sw["task"] == "digits-mlp"


def test_report_from_a_bare_sweep(tmp_path, result):
    sweep = dict(make_sweep(result, best_eps=1e-6, beta2=(None,)), range=None)
    write_report(tmp_path, sweep=sweep)  # a dict works as well as DIR/sweep.json
    page = _page(tmp_path)
    assert "ε ∈ [" not in page and 'id="sweep"' in page
    assert _figure_ids(page) == ["heatmap-lr-eps"]  # β2 does not vary: one heat map


class _NoFigures:
    """Stands in for report._Figures: records which figures a section asks for, draws none."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def html(self, make, name, caption, *, wide=False) -> str:
        self.names.append(name)
        return f"<figure id=fig-{name}></figure>"


def test_figures_section_skips_evolution_without_snapshots(result):
    import dataclasses

    from epsfinder.report import _figures_section

    figs = _NoFigures()
    _figures_section(result, figs)
    assert figs.names == ["histogram", "layers", "evolution", "adaptability"]
    figs = _NoFigures()
    section = _figures_section(dataclasses.replace(result, snapshots=[]), figs)
    assert figs.names == ["histogram", "layers", "adaptability"]
    assert "keeps one snapshot only" in section


def test_missing_inputs_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"result\.json.*sweep\.json"):
        write_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="no directory"):
        write_report(tmp_path / "nope")
    with pytest.raises(ValueError, match="figure_format"):
        write_report(tmp_path, result=digits_result(), figure_format="gif")


def test_cli_report(tmp_path, result, capsys):
    d = tmp_path / "cli"
    d.mkdir()
    (d / "sweep.json").write_text(json.dumps(dict(make_sweep(result, best_eps=1e-6, beta2=(None,)), range=None)))
    assert main(["report", str(d), "--format", "png", "--figures"]) == 0
    assert sorted(p.name for p in (d / "figures").iterdir()) == ["heatmap-lr-eps.png", "heatmap-lr-eps.svg"]
    out = capsys.readouterr().out.strip()
    assert out == str(d / "report.html") and Path(out).is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "epsfinder report: error:" in err and "result.json" in err and "sweep.json" in err


# ---------------------------------------------------------------------------------------------- browser
def _driver(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-default-apps", "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    driver = _driver(tmp_path / "profile")
    try:
        driver.set_page_load_timeout(60)
        driver.get((run_dir / "report.html").as_uri())
        deadline = time.monotonic() + 30
        while driver.execute_script("return document.readyState") != "complete" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert driver.title.startswith("ε range for adam")

        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight,"
            " i.getBoundingClientRect().width, i.getBoundingClientRect().height])")
        assert len(images) == 6
        for alt, complete, nw, nh, w, h in images:
            assert complete and nw > 0 and nh > 0 and w > 200 and h > 100, alt
        boxes = driver.execute_script(
            "return Array.from(document.querySelectorAll('svg')).map(s => s.getBoundingClientRect().width *"
            " s.getBoundingClientRect().height)")
        assert all(area > 0 for area in boxes)  # inline SVGs, if any, are laid out
        tables = driver.execute_script("return document.querySelectorAll('table').length")
        assert tables == 4  # per layer, adaptability, best trials, failed trials

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
        urls = []
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                urls.append(msg["params"]["request"]["url"])
        page_url = (run_dir / "report.html").as_uri()
        assert page_url in urls
        # Only the page itself and its data: URIs; chrome:// is the browser's own start page.
        external = [u for u in urls if not u.startswith(("file:", "data:", "chrome:", "chrome-untrusted:", "about:"))]
        assert external == []
        assert [u for u in urls if u.startswith("file:")] == [page_url]

        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.stat().st_size > 50_000
    try:
        shutil.copy(shot, SCREENSHOT_COPY)
    except OSError:  # another user's file there: the screenshot stays in the test's tmp folder
        pass
