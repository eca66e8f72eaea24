"""
Drive the browser client (chatd/web/static) in Debian's Chromium with selenium, against a real daemon
(tests/daemon.py). /work/shared/RESEARCH.md, "Browser client": the driver is /usr/bin/chromedriver (so
selenium downloads nothing), the flags run it headless in a container.

Every wait is a WebDriverWait on a condition, bounded; nothing sleeps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: How long a wait for the page may take (a page -> WebSocket -> broadcast round trip takes about 1 s).
WAIT = 15.0


def missing() -> str:
    """Why the browser tests cannot run here ("" if they can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    return ""


class Browser:
    """One headless Chromium (one user) on the page at ``url``."""

    def __init__(self, url: str, width: int = 1100, height: int = 760) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        self.url = url
        self.profile = tempfile.mkdtemp(prefix="chatd-chromium-")
        options = Options()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "--lang=en-US"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_window_size(width, height)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- waiting and finding ---------------------------------------------------------------------

    def wait(self, condition: Callable[[Any], Any], timeout: float = WAIT, message: str = "") -> Any:
        """
        What ``condition(driver)`` returns once it is true; fails after ``timeout`` seconds. A condition that
        looks at an element not there yet (``find_all(...)[-1]`` of an empty list, an element drawn again
        meanwhile) is "not yet", not a failure: it is asked again.
        """
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        not_yet = (IndexError, NoSuchElementException, StaleElementReferenceException)
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05, ignored_exceptions=not_yet).until(
            condition, message)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text_of(self, css: str) -> str:
        """The rendered text of the first element matching ``css`` ("" if none)."""
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", css)

    def log_lines(self) -> list[str]:
        """The text of every line in the room's log, oldest first."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#log .line'), e => e.textContent);")

    def wait_line(self, part: str, timeout: float = WAIT) -> str:
        """The first line of the log containing ``part``, once there is one."""
        def found(_: Any) -> str | None:
            return next((line for line in self.log_lines() if part in line), None)

        return self.wait(found, timeout, f"no line with {part[:80]!r} in {self.log_lines()[-5:]!r}")

    def errors(self) -> list[str]:
        """Messages the page's JavaScript logged as errors (an exception, a failed load, a CSP refusal)."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    # -- what a user does ------------------------------------------------------------------------

    def open(self) -> None:
        self.driver.get(self.url)
        self.wait(lambda d: self.text_of("#status") == "Connected", message="the page did not connect")

    def register(self, name: str, password: str = "secret1") -> None:
        """Fill the form from the keyboard alone: name, Tab, password, Tab to 'Create account', Enter."""
        from selenium.webdriver.common.keys import Keys

        field = self.find("#login-name")
        field.clear()
        field.click()
        self.driver.switch_to.active_element.send_keys(name, Keys.TAB, password, Keys.TAB, Keys.TAB, Keys.ENTER)
        self.wait(lambda d: self.text_of("#me-name") == name and self.find("#login-view").get_attribute("hidden"),
                  message=f"not logged in as {name}: {self.text_of('#login-error')!r}")

    def join(self, room: str) -> None:
        """Click ``room`` in the room list (refreshed first if it is not there yet) and wait for its view."""
        if not self.find_all(f"#room-list li[data-room='{room}'] .join"):
            self.find("#refresh-rooms").click()
        self.click(f"#room-list li[data-room='{room}'] .join")
        self.wait(lambda d: self.text_of("#room-name") == room and self.find("#room-view").is_displayed(),
                  message=f"did not enter {room}")

    def click(self, css: str) -> None:
        """
        Click the element matching ``css`` once there is one, found and clicked in one step: the room list
        is drawn again whenever its data comes, so an element found before may be gone by the click.
        """
        clicked = "const e = document.querySelector(arguments[0]); if (e) e.click(); return e !== null;"
        self.wait(lambda d: d.execute_script(clicked, css), message=f"nothing matches {css}")

    def attribute(self, css: str, name: str) -> str | None:
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            css, name)

    def create(self, room: str) -> None:
        from selenium.webdriver.common.keys import Keys

        self.find("#create-name").send_keys(room, Keys.ENTER)
        self.wait(lambda d: self.find_all(f"#room-list li[data-room='{room}']"), message=f"{room} not created")

    def type_line(self, text: str) -> None:
        """Type a line in the room and send it with Enter (set as a value: send_keys is slow for long lines)."""
        from selenium.webdriver.common.keys import Keys

        field = self.find("#say-input")
        self.driver.execute_script("arguments[0].value = arguments[1];", field, text)
        field.send_keys(Keys.ENTER)
        self.wait(lambda d: field.get_attribute("value") == "", message="the line was not sent")

    def screenshot(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.driver.save_screenshot(path)
