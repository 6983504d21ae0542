"""Drives Debian's Chromium (headless, through Selenium and chromedriver) through the
dashboard of a running node: opens the link `colony up` printed, sees a limit's bar
move within two seconds of a principal being created, casts a vote by clicking and
sees the tally change, applies a brake, reads the live decision log, sees an MCP
client's subscription and its decisions in the MCP view, approves an agent's call of
an upstream tool there, and saves a screenshot.

Usage: dashboard_browser.py BASE_URL LINK ADMIN_TOKEN CHROMIUM CHROMEDRIVER SCREENSHOT
Prints "all checks passed" when every check holds.
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.request

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp.shared._httpx_utils import create_mcp_http_client

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from headless import chromium

BASE, LINK, ADMIN, CHROMIUM, CHROMEDRIVER, SCREENSHOT = sys.argv[1:7]


def call(method, path, body=None):
    request = urllib.request.Request(
        BASE + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {path}: {error.code} {error.read().decode()}") from None


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


driver = chromium(CHROMIUM, CHROMEDRIVER)


def wait(seconds, condition, what):
    started = time.monotonic()
    WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: condition(), what)
    return time.monotonic() - started


def attribute(selector, name):
    """An attribute read in one step (the page redraws its views as they change)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null",
        selector, name)


class McpClient:
    """An MCP client on its own thread: makes a decision over MCP (a reservation),
    then holds a subscription to a task open until stopped."""

    def __init__(self, task):
        self.task = task
        self.listening = threading.Event()
        self.stop = threading.Event()
        self.failed = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            anyio.run(self.hold)
        except Exception as error:  # reported by the main thread's check
            self.failed = error
            self.listening.set()

    async def hold(self):
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {ADMIN}"})
        async with client:
            async with streamable_http_client(f"{BASE}/mcp", http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.discover()
                    reserved = await session.call_tool(
                        "ledger_reserve", {"resource": "io_ops", "amount": 1, "justification": "an MCP client's decision"})
                    if reserved.is_error:
                        raise AssertionError(f"ledger_reserve over MCP: {reserved.content}")
                    uri = f"colony://tasks/{self.task}"
                    async with listen(session, resource_subscriptions=[uri]):
                        self.listening.set()
                        while not self.stop.is_set():
                            await anyio.sleep(0.05)

    def close(self):
        self.stop.set()
        self.thread.join(10)


class ToolCaller:
    """An AI agent calling the upstream `notes__delete_note` over MCP on its own
    thread: the call waits for a person's approval."""

    def __init__(self, token):
        self.token = token
        self.result = None
        self.thread = threading.Thread(target=lambda: anyio.run(self.call), daemon=True)
        self.thread.start()

    async def call(self):
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {self.token}"})
        async with client:
            async with streamable_http_client(f"{BASE}/mcp", http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    result = await session.call_tool(
                        "notes__delete_note", {"name": "stale-draft", "justification": "the draft is obsolete"})
                    self.result = " ".join(getattr(block, "text", "") for block in result.content)


def usage(limit):
    value = attribute(f'.limit[data-limit="{limit}"]', "data-usage")
    return None if value is None else int(value)


try:
    # Some colony to look at.
    for n in range(9):
        call("POST", "/v1/principals", {"name": f"agent-{n}", "kind": "ai",
                                        "justification": "the dashboard test's agents"})
    parent = call("POST", "/v1/tasks", {"title": "write the release notes",
                                        "budget_usd": "2.00", "justification": "a task to show"})
    lease = call("POST", "/v1/tasks/claim", {"justification": "to split it"})["lease"]
    call("POST", f"/v1/tasks/{parent['address']}/decompose", {
        "lease_token": lease["token"],
        "subtasks": [{"title": t} for t in ("collect the changes", "draft", "review")],
        "justification": "three steps"})

    # The link carries the token in its fragment; the page moves it to session storage.
    started = time.monotonic()
    driver.get(LINK)
    wait(10, lambda: usage("ai_accounts") is not None, "the limits are drawn")
    print(f"first render: {time.monotonic() - started:.3f} s")
    check("token" not in driver.current_url, "the token leaves the address bar")
    stored = driver.execute_script("return sessionStorage.getItem('colony-token')")
    check(stored == ADMIN, "the token is kept in session storage")
    wait(10, lambda: "on" in driver.find_element(By.ID, "live").get_attribute("class"),
         "the live feed is connected")
    for limit in ("ai_accounts", "human_accounts", "llm_spend_usd", "task_queue_depth"):
        check(usage(limit) is not None, f"{limit} has a bar")
    charts = driver.find_elements(By.CSS_SELECTOR, '.limit[data-limit="ai_accounts"] svg.chart')
    check(len(charts) == 1, "ai_accounts has a history chart")

    # A principal is created: its limit's bar moves within two seconds.
    before = usage("ai_accounts")
    call("POST", "/v1/principals", {"name": "newcomer", "kind": "ai",
                                    "justification": "the bar must move"})
    moved = wait(2, lambda: usage("ai_accounts") == before + 1, "the ai_accounts bar moves")
    print(f"bar moved {moved:.3f} s after the principal was created")
    width = driver.execute_script(
        "return getComputedStyle(document.querySelector(arguments[0])).width",
        '.limit[data-limit="ai_accounts"] .fill')
    check(width not in (None, "0px"), f"the bar is filled ({width})")
    # The tenth AI reaches ai_accounts' soft value: the watcher's alert shows up.
    wait(5, lambda: driver.execute_script(
        "return [...document.querySelectorAll('#alerts tbody tr')].some(r => r.textContent.includes('ai_accounts'))"),
        "the soft-limit alert is listed")
    check(attribute('.limit[data-limit="ai_accounts"]', "class").endswith("soft"),
          "the ai_accounts bar is coloured past soft")
    time.sleep(0.5)  # let the bar's transition end before the picture
    driver.save_screenshot(SCREENSHOT)
    check(True, f"screenshot saved to {SCREENSHOT}")

    # A raise waits for both sides; the admin votes by clicking.
    proposal = call("POST", "/v1/proposals", {"limit": "ai_accounts", "hard": 60,
                                              "justification": "more agents for the launch"})
    pid = proposal["id"]
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-view="governance"]').click()
    card = f'.proposal[data-proposal="{pid}"]'
    wait(5, lambda: driver.find_elements(By.CSS_SELECTOR, card), "the proposal is listed")

    def approvals():
        value = attribute(f'{card} .tally[data-side="human"]', "data-approve")
        return None if value is None else int(value)

    check(approvals() == 0, "no human has approved yet")
    driver.find_element(By.ID, "vote-why").send_keys("the launch needs them")
    driver.find_element(By.CSS_SELECTOR, f'{card} button.vote[data-vote="approve"]').click()
    wait(3, lambda: approvals() == 1, "the human tally shows the vote")
    votes = call("GET", f"/v1/proposals/{pid}")["votes"]
    check(any(v["voter"] == "1.1" and v["vote"] == "approve"
              and v["justification"] == "the launch needs them" for v in votes),
          "the vote is recorded with its justification")

    # The brake button lowers a limit at once.
    driver.find_element(By.CSS_SELECTOR, '#brake-limit option[value="task_queue_depth"]').click()
    driver.find_element(By.ID, "brake-hard").send_keys("400")
    driver.find_element(By.ID, "brake-why").send_keys("slow down while we look")
    driver.find_element(By.ID, "brake-apply").click()
    wait(3, lambda: call("GET", "/v1/limits/task_queue_depth")["hard"] == 400,
         "the brake applies")

    # The decision log shows decisions as they happen, and filters them.
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-view="log"]').click()
    driver.find_element(By.ID, "log-action").send_keys("principal.create")
    call("POST", "/v1/principals", {"name": "late", "kind": "ai", "justification": "seen live"})
    rows = '#log tbody tr'

    def actions():
        return driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(r => r.cells[3].textContent)",
            rows)

    wait(3, lambda: len(actions()) >= 5, "the log lists the principals created")
    check(set(actions()) == {"principal.create"}, "the filter keeps only that action")

    # The MCP view: an MCP client's open subscription and its decisions.
    mcp_client = McpClient(parent["address"])
    check(mcp_client.listening.wait(20) and mcp_client.failed is None,
          f"an MCP client holds a subscription open ({mcp_client.failed})")
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-view="mcp"]').click()

    def card_value(key):
        return driver.execute_script(
            "const e = document.querySelector(`[data-card=\"${arguments[0]}\"] .value`); return e && e.textContent",
            key)

    wait(5, lambda: card_value("mcp-subscriptions") == "1", "the MCP view counts the open subscription")
    check(int(card_value("mcp-decisions")) >= 1, "the MCP view counts the decisions made over MCP")
    subscribers = driver.execute_script(
        "return [...document.querySelectorAll('#mcp-subscribers tbody tr')].map(r => r.textContent)")
    check(subscribers == ["1.11"], f"the subscriber is listed with its count: {subscribers}")
    mcp_client.close()
    wait(12, lambda: card_value("mcp-subscriptions") == "0", "the subscription is gone once the client leaves")
    servers = driver.execute_script(
        "return [...document.querySelectorAll('#mcp-servers tbody tr')].map(r => [r.cells[0].textContent, r.cells[1].textContent])")
    check(servers == [["notes", "up"]], f"the upstream server is listed up: {servers}")

    # An agent's call of a tool a person approves: it waits in the MCP view until
    # the admin approves it there, then runs.
    agent = call("POST", "/v1/principals", {"name": "tidy-agent", "kind": "ai",
                                            "justification": "calls an upstream tool"})
    caller = ToolCaller(agent["token"])
    row = '#mcp-approvals tbody tr'
    wait(15, lambda: driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].some(r => r.textContent.includes('notes__delete_note'))", row),
        "the waiting call is listed")
    driver.find_element(By.ID, "mcp-why").send_keys("obsolete drafts may go")
    driver.find_element(By.CSS_SELECTOR, f"{row} button.approve").click()
    caller.thread.join(20)
    check(caller.result == "deleted stale-draft", f"the approved call ran: {caller.result}")
    grants = call("GET", "/v1/grants")["grants"]
    check(any(g["kind"] == "tool_call" and g["state"] == "used" and g["decided_by"] == "1.1" for g in grants),
          "the approval is recorded as the admin's")

    # The other views render without an error.
    for view in ("tasks", "workers", "reports", "overview"):
        driver.find_element(By.CSS_SELECTOR, f'nav a[data-view="{view}"]').click()
        wait(5, lambda: driver.find_element(By.ID, f"view-{view}").is_displayed(), f"{view} shows")
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-view="tasks"]').click()
    wait(5, lambda: driver.execute_script("return document.querySelectorAll('#task-tree li').length") == 4,
         "the decomposition tree shows the task and its subtasks")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    check(not errors, f"no error in the browser's console: {errors}")
    print("all checks passed")
finally:
    driver.quit()
