"""The report in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium over pages made from real digits runs.

Skipped, with the reason, where no browser is installed (``make test`` installs it when it
runs as root with apt). ``TASKSPACE_SCREENSHOTS=<folder>`` also saves the README's
screenshots there.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskspace.report.page import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - selenium is a dev dependency
    webdriver = None

pytestmark = pytest.mark.skipif(
    webdriver is None or not CHROMIUM or not DRIVER,
    reason="no browser: needs the chromium and chromium-driver packages and selenium "
    "(make test installs them when it runs as root with apt)",
)


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,2400",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(report_runs: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    order = ["agreement", "discover", "pretrain", "split", "split-eval", "sweep"]
    out = tmp_path_factory.mktemp("page") / "report.html"
    return build_report([report_runs[k] for k in order], out, title="taskspace test report")


def open_page(driver, path: Path) -> None:  # noqa: ANN001
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return document.body.dataset.ready") == "1"


def not_blank(png: bytes) -> float:
    """Share of pixels that differ from the most common colour (the background)."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    _, inverse, counts = np.unique(img, axis=0, return_inverse=True, return_counts=True)
    return float(1.0 - counts.max() / len(img))


def screenshot_to(name: str, png: bytes) -> None:
    folder = os.environ.get("TASKSPACE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(png)


def test_page_loads_without_console_errors_and_has_every_section(browser, page) -> None:  # noqa: ANN001
    open_page(browser, page)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    kinds = [
        s.get_attribute("data-kind")
        for s in browser.find_elements(By.CSS_SELECTOR, "section.report-section")
    ]
    assert kinds == ["agreement", "discovery", "pretrain", "split", "split-eval", "sweep"]
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
        ".map(i => i.alt)"
    )
    assert broken == []
    assert len(browser.find_elements(By.CSS_SELECTOR, ".gallery img.thumb")) == 4 * 2 * 8


def test_every_section_screenshot_is_not_blank(browser, page) -> None:  # noqa: ANN001
    open_page(browser, page)
    for section in browser.find_elements(By.CSS_SELECTOR, "section.report-section"):
        browser.execute_script("arguments[0].scrollIntoView()", section)
        png = section.screenshot_as_png
        share = not_blank(png)
        assert share > 0.02, f"section {section.get_attribute('data-kind')} looks blank"


def test_sorting_a_table_by_a_click(browser, page) -> None:  # noqa: ANN001
    open_page(browser, page)
    table = browser.find_element(By.CSS_SELECTOR, "section.sweep table.sortable")
    header = table.find_elements(By.CSS_SELECTOR, "th")[0]
    header.click()
    header.click()  # descending
    first = table.find_elements(By.CSS_SELECTOR, "tbody tr td")[0].text
    assert first == "1"  # points 0 and 1, descending


def test_split_viewer_steps_through_splits(browser, page) -> None:  # noqa: ANN001
    open_page(browser, page)
    viewer = browser.find_element(By.CSS_SELECTOR, "section.split-eval .split-viewer")
    names = [o.text for o in viewer.find_elements(By.CSS_SELECTOR, "option")]
    assert len(names) == 8
    assert viewer.get_attribute("data-current") == names[0]
    count = viewer.find_element(By.CSS_SELECTOR, ".viewer-count")
    assert count.text == "1 / 8"
    assert len(viewer.find_elements(By.CSS_SELECTOR, ".panel.mistakes img")) > 0
    browser.execute_script("arguments[0].scrollIntoView()", viewer)
    screenshot_to("report.png", viewer.screenshot_as_png)
    viewer.find_element(By.CSS_SELECTOR, ".viewer-next").click()
    assert viewer.get_attribute("data-current") == names[1] and count.text == "2 / 8"
    viewer.find_element(By.CSS_SELECTOR, ".viewer-prev").click()
    assert viewer.get_attribute("data-current") == names[0]
    for _ in range(10):  # past the end stays on the last split
        button = viewer.find_element(By.CSS_SELECTOR, ".viewer-next")
        if button.is_enabled():
            button.click()
    assert viewer.get_attribute("data-current") == names[-1] and count.text == "8 / 8"
    # every image of the train panel of this split is a real, loaded picture
    imgs = viewer.find_elements(By.CSS_SELECTOR, ".panel.train img")
    assert imgs and all(i.get_property("naturalWidth") == 8 for i in imgs)


def test_quiz_scores_scripted_answers_given_by_click_and_by_key(browser, page) -> None:  # noqa: ANN001
    open_page(browser, page)
    quiz = browser.find_element(By.CSS_SELECTOR, "section.discovery .quiz")
    data = json.loads(
        browser.execute_script(
            "return document.getElementById(arguments[0]).textContent",
            quiz.get_attribute("data-src"),
        )
    )
    kinds = {t["kind"] for t in data["tasks"]}
    assert kinds == {"discovered", "human", "random"}
    task = data["tasks"][0]
    labels = [q["label"] for q in task["questions"]]
    answers = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1][: len(labels)]
    for n, a in enumerate(answers):
        if n % 2 == 0:
            quiz.find_element(By.CSS_SELECTOR, f"button.quiz-{a}").click()
        else:
            browser.find_element(By.TAG_NAME, "body").send_keys(str(a))
    correct = sum(a == y for a, y in zip(answers, labels))
    row = quiz.find_element(By.CSS_SELECTOR, f'tr[data-task="{task["name"]}"]')
    assert row.find_element(By.CSS_SELECTOR, ".q-answered").text == f"{len(labels)} / {len(labels)}"
    assert row.find_element(By.CSS_SELECTOR, ".q-correct").text == str(correct)
    assert row.find_element(By.CSS_SELECTOR, ".q-score").text == f"{correct / len(labels):.2f}"
    done = quiz.find_element(By.CSS_SELECTOR, ".quiz-done").text
    assert done.startswith(f"done: {correct} of {len(labels)} correct")
    browser.execute_script("arguments[0].scrollIntoView()", quiz)
    screenshot_to("quiz.png", quiz.screenshot_as_png)
    # a second task, answered with its true labels by key, scores 1.00
    select = quiz.find_element(By.CSS_SELECTOR, ".quiz-task-select")
    human = next(i for i, t in enumerate(data["tasks"]) if t["kind"] == "human")
    select.find_elements(By.TAG_NAME, "option")[human].click()
    quiz.click()
    browser.execute_script("arguments[0].scrollIntoView()", quiz)
    assert not_blank(quiz.screenshot_as_png) > 0.02
    for q in data["tasks"][human]["questions"]:
        browser.find_element(By.TAG_NAME, "body").send_keys(str(q["label"]))
    row = quiz.find_element(By.CSS_SELECTOR, f'tr[data-task="{data["tasks"][human]["name"]}"]')
    assert row.find_element(By.CSS_SELECTOR, ".q-score").text == "1.00"
