"""The status page on ``/`` of a running launcher's web port, loaded in
headless Chromium (Debian's package; tools/run-tests installs it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nodepool.driver.fake.cloud import FakeCloud
from nodepool.tests.browser import HeadlessChromium, chromium_available
from nodepool.tests.helpers import assert_request_waits, fake_config, wait_for
from nodepool.web.status_page import StatusPage
from nodepool.webapp import WebApp


@pytest.fixture
def launcher_web() -> Iterator[Callable[..., WebApp]]:
    """launcher_web(launcher, **kw) -> a started WebApp serving the
    launcher's listings and status page, wired as nodepool-launcher
    wires it."""
    started: list[WebApp] = []

    def start(launcher: Any, **kwargs: Any) -> WebApp:
        app = WebApp(launcher.zk, lambda: launcher.config, lambda: launcher.ready,
                     "127.0.0.1", 0, node_cache=launcher.node_cache,
                     request_cache=launcher.request_cache,
                     status_page=StatusPage(launcher), **kwargs)
        app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def get(app: WebApp, path: str) -> tuple[int, Any, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.port}{path}",
                                    timeout=10) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def rows(browser: HeadlessChromium, selector: str) -> list[dict[str, Any]]:
    """Every element matching ``selector`` as its data attributes plus
    ``text`` (what the browser renders in it)."""
    return browser.evaluate(
        f"[...document.querySelectorAll({json.dumps(selector)})]"
        ".map(e => Object.assign({text: e.innerText}, e.dataset))")


def test_status_page_in_chromium(zk_info, zuul, launcher_factory, launcher_web, tmp_path):
    if not chromium_available():
        pytest.skip("Debian's chromium is not installed (tools/run-tests installs it)")
    cloud = FakeCloud.for_provider("fake-provider")
    launcher = launcher_factory(fake_config(
        zk_info, max_servers=1, provider_extra="    launch-retries: 1\n"))
    # A launch that fails: its error shows under the provider.
    cloud.fail_next_creates(1)
    failed_id = zuul.submit(["fake-label"])
    assert zuul.wait_request(failed_id)["state"] == "failed"
    # A node in use fills the pool (max-servers 1), so the next waits.
    used_id = zuul.submit(["fake-label"])
    assert zuul.wait_request(used_id)["state"] == "fulfilled"
    [node_id] = zuul.accept(used_id)
    waiting_id = zuul.submit(["fake-label"])
    assert_request_waits(zuul, launcher, waiting_id)
    # The launcher's cache shows Zuul's in-use write before the page does.
    wait_for(lambda: launcher.node_cache.get(node_id).state == "in-use",
             what="node in use in the launcher's cache")
    web = launcher_web(launcher)
    url = f"http://127.0.0.1:{web.port}/"

    with HeadlessChromium(tmp_path / "chromium") as browser:
        browser.open(url)
        screenshot = browser.screenshot(tmp_path / "status-page.png")

        [node] = [n for n in rows(browser, "tr.node") if n["nodeId"] == node_id]
        assert node["state"] == "in-use"
        assert "fake-label" in node["text"] and "fake-provider/main" in node["text"]

        requests = {r["requestId"]: r for r in rows(browser, "tr.request")}
        assert set(requests) == {failed_id, waiting_id}  # Zuul deleted the used one
        assert requests[waiting_id]["state"] == "requested"
        assert requests[waiting_id]["reason"] == "capacity"
        assert "waiting for capacity" in requests[waiting_id]["text"]
        assert requests[failed_id]["reason"] == "failed"

        [pool] = rows(browser, "tr.pool")
        assert (pool["provider"], pool["pool"], pool["state"]) == (
            "fake-provider", "main", "serving")
        [instances] = rows(browser, "tr.pool li[data-resource=instances]")
        assert (instances["used"], instances["limit"]) == ("1", "1")

        [in_use] = rows(browser, "tr.label-count[data-label=fake-label] "
                                 "td[data-state=in-use]")
        assert in_use["text"] == "1"

        [error] = rows(browser, "tr.launch-error")
        assert error["provider"] == "fake-provider" and error["outcome"] == "failed"
        assert "Injected failure creating server" in error["text"]
        assert failed_id in error["text"]

        # It reloads itself, and loaded nothing besides itself.
        assert browser.evaluate(
            "document.querySelector('meta[http-equiv=refresh]').content") == "10"
        assert browser.evaluate("performance.getEntriesByType('resource').length") == 0

        # On a phone the page fits the screen; wide tables scroll inside it.
        browser.emulate(390, 844, mobile=True, scale=2)
        browser.open(url)
        assert browser.evaluate("document.documentElement.scrollWidth") <= 390
        assert browser.evaluate(
            "[...document.querySelectorAll('div.scroll')]"
            ".every(d => getComputedStyle(d).overflowX === 'auto')")
        browser.screenshot(tmp_path / "status-page-phone.png")

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_page_is_rendered_from_memory(zk_info, zuul, launcher_factory, launcher_web):
    launcher = launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["fake-label"])
    [node_id] = zuul.wait_request(request_id)["nodes"]
    wait_for(lambda: launcher.node_cache.get(node_id) is not None, what="node cached")
    # Every answer freshly rendered: nothing comes from the web cache.
    web = launcher_web(launcher, cache_seconds=0)
    code, headers, body = get(web, "/")
    assert code == 200
    assert headers["Content-Type"] == "text/html; charset=UTF-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert f'data-node-id="{node_id}"' in body and "ZooKeeper connected" in body

    # Without a ZooKeeper connection any read would fail: the page still
    # shows what the launcher knows, and says it may be stale.
    launcher.zk_client.disconnect()
    assert get(web, "/health")[0] == 503
    code, _, body = get(web, "/")
    assert code == 200
    assert f'data-node-id="{node_id}"' in body
    assert f'data-request-id="{request_id}"' in body
    assert "ZooKeeper disconnected" in body


def test_root_is_not_found_without_a_status_page(zk):
    web = WebApp(zk, None, lambda: True, "127.0.0.1", 0)
    web.start()
    try:
        assert get(web, "/")[0] == 404
    finally:
        web.stop()
