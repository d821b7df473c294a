"""Headless Chromium for looking at the viewer as a person would (its tests and benchmark use this): Debian's
``chromium`` + ``chromium-driver`` driven by Selenium, WebGL through SwiftShader (no GPU needed), no network.

    >>> with chromium() as driver:
    ...     driver.get("http://127.0.0.1:8080/")
    ...     picture = wait_for_scene(driver, Path("shots/first.png"), min_pixels=3000)

Needs ``pip install selenium`` (the dev extra) and ``apt-get install chromium chromium-driver``; no browser is
downloaded.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

WINDOW = (1280, 800)
# The part of the window where the 3-D view shows and nothing else does: right of viser's "software WebGL"
# notification, left of its control panel (~400 px on the right).
SCENE_BOX = (330, 0, 860, 800)  # x0, y0, x1, y1
FLAGS = ("--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage")


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed, else None."""
    browser = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file()
                                              else None)
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def chromium(page_load_timeout: float = 120.0) -> Iterator[object]:
    """A headless Chromium (Selenium WebDriver) with a fresh profile, closed and removed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise FileNotFoundError("chromium and chromedriver are not installed: apt-get install chromium "
                                "chromium-driver")
    profile = tempfile.mkdtemp(prefix="d4rt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.set_page_load_timeout(page_load_timeout)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, path: Path) -> np.ndarray:
    """Save a PNG of the window to ``path`` -> the picture [H, W, 3] uint8 RGB."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(driver.get_screenshot_as_png())
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def scene_pixels(image: np.ndarray, box: tuple[int, int, int, int] = SCENE_BOX) -> np.ndarray:
    """Pixels of ``box`` that differ from its background (its most common colour) by more than 40 -> bool [h, w]."""
    x0, y0, x1, y1 = box
    part = image[y0:y1, x0:x1].astype(np.int16)
    colours, counts = np.unique(part.reshape(-1, 3), axis=0, return_counts=True)
    return np.abs(part - colours[np.argmax(counts)]).max(-1) > 40


def changed_fraction(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int] = SCENE_BOX) -> float:
    """The fraction of ``box``'s pixels that differ by more than 40 between two pictures of the same size."""
    x0, y0, x1, y1 = box
    diff = np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1]).max(-1)
    return float((diff > 40).mean())


def wait_for_scene(driver, path: Path, min_pixels: int, timeout: float = 90.0) -> np.ndarray:
    """Screenshot (to ``path``) every second until at least ``min_pixels`` scene pixels are drawn -> the picture;
    AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        image = screenshot(driver, path)
        drawn = int(scene_pixels(image).sum())
        if drawn >= min_pixels:
            return image
        if time.monotonic() > deadline:
            raise AssertionError(f"only {drawn} scene pixels drawn after {timeout:.0f} s (see {path})")
        time.sleep(1.0)


def set_number(driver, label: str, value: float) -> None:
    """Type a value into the number box of the control labelled ``label`` (viser's panel) and press Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    rows = driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{label}']/ancestor::*[.//input][1]")
    if not rows:
        raise AssertionError(f"no control labelled {label!r} on the page")
    box = rows[0].find_elements(By.CSS_SELECTOR, "input")[-1]
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.ENTER)


def animation_fps(driver, seconds: float = 3.0) -> float:
    """Frames per second the page paints (requestAnimationFrame callbacks counted over ``seconds``)."""
    return float(driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; const ms = arguments[0] * 1000; let n = 0;"
        "const t0 = performance.now(); function tick(t) { n++; if (t - t0 < ms) requestAnimationFrame(tick);"
        " else done(n * 1000 / (t - t0)); } requestAnimationFrame(tick);", seconds))
