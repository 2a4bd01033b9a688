"""Browser tests of the web console: one live API (uvicorn on a free port, SQLite catalog, inline jobs, an admin
and a predict key) and one headless Chromium for the whole module run, a fresh browser context per test.

The browser is Debian's ``chromium`` driven by Playwright's Python API (``executable_path``; Playwright's own
browser download is not used). Where either is missing the tests are skipped with the reason, or fail under
``KF_TEST_REQUIRE_SERVICES=1`` (CI installs both). Screenshots of every page, 1280x800, go to
``KF_UI_SCREENSHOTS`` if set, else to a folder under pytest's tmp dir (printed at the end of the run).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.console import CHROMIUM_ARGS  # one flag list for these tests and the console benchmark
from tests.conftest import make_settings
from tests.service.helpers import free_port

CHROMIUM = os.environ.get("KF_TEST_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
_REQUIRE = os.environ.get("KF_TEST_REQUIRE_SERVICES") == "1"


def _missing(why: str) -> None:
    if _REQUIRE:
        pytest.fail(why + " and KF_TEST_REQUIRE_SERVICES=1")
    pytest.skip(why)


@dataclass
class Console:
    """The live API the browser talks to, its keys and an HTTP client for checking what the pages show."""

    base_url: str
    admin_key: str
    predict_key: str
    settings: Any
    http: Any = field(repr=False)

    def url(self, hash_path: str = "") -> str:
        return f"{self.base_url}/ui/{hash_path}"

    def api(self, method: str, path: str, *, key: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return self.http.request(method, path, headers=headers, **kw)


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    import httpx
    import uvicorn

    from service.catalog.db import make_engine, make_sessionmaker
    from service.catalog.keys import create_key
    from service.catalog.migrate import upgrade
    from service.main import create_app

    root = tmp_path_factory.mktemp("console")
    settings = make_settings(root, f"sqlite:///{root}/catalog.db")
    upgrade(settings)
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as session:
        _, admin = create_key(session=session, scope="admin", name="console admin")
        _, predict = create_key(session=session, scope="predict", name="console predict")
        session.commit()
    engine.dispose()
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kf-console-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            yield Console(base, admin, predict, settings, http)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright's Python package is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KF_TEST_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("KF_UI_SCREENSHOTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Tab:
    """A browser page with what it saw: dialogs that fired and uncaught script errors, and a screenshot helper."""

    page: Any
    dialogs: list[str]
    errors: list[str]
    shots: Path

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


@pytest.fixture
def tab(browser: Any, shots: Path) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield Tab(page, dialogs, errors, shots)
    finally:
        context.close()


def sign_in(tab: Tab, console: Console, key: str, hash_path: str = "") -> None:
    """Open the console and sign in with ``key`` through the form, as a user does."""
    tab.page.goto(console.url(hash_path))
    tab.page.fill("#api-key", key)
    tab.page.click("#sign-in button[type=submit]")
    tab.page.wait_for_selector("#scope")


def wait_until(check: Callable[[], bool], *, timeout: float = 60.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
