"""The HTML report in a real browser: Debian's headless Chromium, driven by selenium through Debian's
chromedriver (nothing is downloaded). No console error, a table row per measure, sorting and filtering work,
every figure decodes, and a screenshot at 1280 px is not blank (kept at /tmp/html_report.png to look at)."""

import io
import shutil
from pathlib import Path

import pytest

from audit.judge.rows import run_rows
from audit.pipeline.report import classes_of, load_report
from audit.render.html import report_document, write_html_report

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOT = Path("/tmp/html_report.png")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's headless browser: apt-get install chromium chromium-driver")


@pytest.fixture(scope="module")
def page(small_store, tmp_path_factory):
    """The small store's report opened in headless Chromium: (the JSON document, the driver)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    folder = tmp_path_factory.mktemp("browser")
    scored = load_report(small_store, [])
    rows = run_rows(scored.records, scored.family, scored.at)
    document = report_document(str(scored.root), rows, scored.judged, scored.errors, "holm", scored.names)
    path = write_html_report(folder / "report.html", document, scored.records,
                             num_classes=classes_of(scored.records)).path
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", f"--user-data-dir={folder / 'profile'}", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # selenium-manager must never try to download a browser or driver
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(path.resolve().as_uri())
        yield document, driver
    finally:
        driver.quit()


def order(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#verdict-table tbody tr'), r => r.cells[0].textContent)")


def header(driver, label: str):
    (th,) = [th for th in driver.find_elements("css selector", "#verdict-table thead th") if th.text == label]
    return th


def test_no_console_error_and_a_row_per_measure(page):
    document, driver = page
    errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    assert order(driver) == [s["measure"] for s in document["summary"]]


def test_clicking_a_header_sorts_by_that_column(page):
    document, driver = page
    before = order(driver)
    tau = {s["measure"]: s["tau"] for s in document["summary"]}
    header(driver, "tau").click()
    ascending = sorted(before, key=lambda m: (tau[m] is None, tau[m] or 0.0))  # blanks last, ties as they were
    assert order(driver) == ascending and ascending != before
    header(driver, "tau").click()
    assert order(driver) == sorted(ascending, key=lambda m: (tau[m] is None, -(tau[m] or 0.0)))
    assert header(driver, "tau").get_attribute("aria-sort") == "descending"
    header(driver, "measure").click()
    assert order(driver) == sorted(before, key=str.lower)


def test_filtering_by_verdict_and_kind(page):
    from selenium.webdriver.support.ui import Select

    document, driver = page
    verdict = document["summary"][-1]["verdict"]
    Select(driver.find_element("id", "f-verdict")).select_by_value(verdict)
    visible = driver.execute_script("return Array.from(document.querySelectorAll('#verdict-table tbody tr'))"
                                    ".filter(r => r.style.display !== 'none').length")
    assert visible == sum(s["verdict"] == verdict for s in document["summary"])
    Select(driver.find_element("id", "f-verdict")).select_by_value("")
    kind = document["summary"][0]["measure_family"]
    Select(driver.find_element("id", "f-kind")).select_by_value(kind)
    shown = driver.find_element("id", "shown").text
    assert shown == f"{sum(s['measure_family'] == kind for s in document['summary'])} of " \
                    f"{len(document['summary'])} measures shown"
    Select(driver.find_element("id", "f-kind")).select_by_value("")


def test_every_figure_decodes_and_a_link_lands_on_its_section(page):
    document, driver = page
    images = driver.execute_script("return Array.from(document.images, i => [i.complete, i.naturalWidth])")
    assert len(images) >= 3 and all(done and width > 0 for done, width in images)
    boxes = driver.execute_script("return Array.from(document.querySelectorAll('svg.plot'), "
                                  "s => s.getBoundingClientRect().width)")
    assert len(boxes) >= len(document["summary"]) and min(boxes) > 100
    name = document["summary"][0]["measure"]
    driver.find_element("link text", name).click()
    target = driver.execute_script("return location.hash.slice(1)")
    assert driver.find_element("id", target).find_element("tag name", "h3").text.startswith(name)
    driver.execute_script("window.scrollTo(0, 0)")


def test_a_screenshot_at_1280_pixels_is_not_blank(page):
    from PIL import Image

    _, driver = page
    driver.execute_script("window.scrollTo(0, 0)")
    png = driver.get_screenshot_as_png()
    SCREENSHOT.write_bytes(png)
    with Image.open(io.BytesIO(png)) as image:
        assert image.width == 1280
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text, badges and table shading, not one colour
