"""The review page in headless Chromium (Debian's `chromium` and `chromium-driver`, driven
by Selenium): load it from the real service, give the token, upload an image, and see
the verdict, the score against the threshold, the overlay and the list of results. A
screenshot is kept beside the test's files."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_utils import Service

pytestmark = [pytest.mark.browser, pytest.mark.service, pytest.mark.slow]

CAT = "pipe_clip"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)
WAIT = 60
ROWS = ("css selector", "#history tbody tr")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed: the browser test needs Debian's chromium "
            "and chromium-driver (apt-get install chromium chromium-driver; .ci/run installs "
            "them when it runs as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def _upload(driver, image: Path) -> None:
    driver.find_element("id", "file").send_keys(str(image))


def test_review_page_shows_verdict_overlay_and_history(
    browser, service: Service, tiny_root: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    browser.get(service.url + "/")
    wait.until(ec.visibility_of_element_located(("id", "token")))  # the service wants a token
    browser.find_element("id", "token").send_keys(service.token)
    browser.find_element("id", "token-save").click()
    wait.until(lambda d: Select(d.find_element("id", "category")).options)
    assert Select(browser.find_element("id", "category")).first_selected_option.text == CAT
    threshold_info = browser.find_element("id", "threshold-info").text
    assert "image threshold" in threshold_info and "rests on fewer than 20" in threshold_info
    # The model was trained on the built-in synthetic data: the operator is told so.
    banner = browser.find_element("id", "data-banner")
    assert banner.is_displayed() and banner.text.startswith("SYNTHETIC TRAINING DATA")
    assert "not on images of real parts" in banner.text
    trained = browser.find_element("id", "trained-on").text
    assert "built-in synthetic data" in trained and "autovi layout" in trained

    images = sorted((tiny_root / CAT / "test").rglob("*.png"))[:2]
    want = [
        httpx.post(
            f"{service.url}/v1/predict/{CAT}",
            content=image.read_bytes(),
            headers={"Content-Type": "image/png", **service.auth()},
            timeout=120,
        ).json()
        for image in images
    ]
    for count, image in enumerate(images, start=1):
        _upload(browser, image)
        wait.until(lambda d, n=count: len(d.find_elements(*ROWS)) == n)
    expected = want[-1]
    verdict = browser.find_element("id", "verdict")
    assert verdict.text == expected["verdict"] and expected["verdict"] in ("OK", "NOK")
    assert browser.find_element("id", "score").text == f"{expected['score']:.4f}"
    assert browser.find_element("id", "threshold").text == f"{expected['threshold']:.4f}"
    overlay = browser.find_element("id", "overlay")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", overlay) > 0)
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 400
    newest = browser.find_elements(*ROWS)[0].text
    assert images[-1].name in newest and expected["verdict"] in newest
    assert not browser.find_element("id", "error").is_displayed()

    shot = tmp_path / "review-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"review page screenshot: {shot}")


DROP = """
const [b64, name] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, { type: "image/png" }));
document.getElementById("drop").dispatchEvent(
  new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
"""


def test_review_page_takes_a_dropped_image_and_reports_a_bad_one(
    browser, service: Service, tiny_root: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    browser.get(service.url + "/")
    browser.execute_script("sessionStorage.setItem('fedpatch-token', arguments[0])", service.token)
    browser.refresh()
    wait.until(lambda d: Select(d.find_element("id", "category")).options)
    image = next((tiny_root / CAT / "test" / "good").glob("*.png"))
    browser.execute_script(DROP, base64.b64encode(image.read_bytes()).decode(), "dropped.png")
    wait.until(lambda d: d.find_elements(*ROWS))
    assert browser.find_element("id", "verdict").text in ("OK", "NOK")
    assert "dropped.png" in browser.find_element("id", "result-name").text
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"these are notes, not an image")
    _upload(browser, fake)
    error = browser.find_element("id", "error")
    wait.until(lambda d: error.is_displayed())
    assert "notes.png" in error.text and "not an image" in error.text
    assert len(browser.find_elements(*ROWS)) == 1
