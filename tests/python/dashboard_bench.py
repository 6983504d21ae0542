"""The dashboard's benchmark (run by `cargo bench -p colony --bench dashboard`, which
starts the node and fills it): page weight, time to first render in headless
Chromium, and the node's request latency with no dashboard open and with ten.

Usage: dashboard_bench.py BASE_URL LINK ADMIN_TOKEN CHROMIUM CHROMEDRIVER
"""

import json
import statistics
import sys
import threading
import time
import urllib.request

from headless import chromium


BASE, LINK, ADMIN, CHROMIUM, CHROMEDRIVER = sys.argv[1:6]
DASHBOARDS = 10
SAMPLES = 400


def request(method, path, body=None):
    req = urllib.request.Request(
        BASE + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.read()


def browser():
    return chromium(CHROMIUM, CHROMEDRIVER, window="1400,1000",
                    extra=("--disable-background-timer-throttling", "--disable-renderer-backgrounding"))


def mark(driver, name, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = driver.execute_script(
            "const m = performance.getEntriesByName(arguments[0]); return m.length ? m[0].startTime : null",
            name)
        if value is not None:
            return value
        time.sleep(0.02)
    raise AssertionError(f"no {name} mark")


def latencies():
    """Milliseconds of a read (GET /v1/limits) and of a durable write pair
    (reserve, then release) each, SAMPLES times."""
    reads, writes = [], []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        request("GET", "/v1/limits")
        reads.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        reservation = json.loads(request("POST", "/v1/ledger/reserve", {
            "resource": "io_ops", "amount": 1, "justification": "bench"}))["reservation"]
        request("POST", "/v1/ledger/release", {"reservation": reservation})
        writes.append((time.perf_counter() - started) * 1000)
    return reads, writes


def summary(name, values):
    values = sorted(values)
    p99 = values[int(len(values) * 0.99) - 1]
    print(f"  {name}: median {statistics.median(values):.2f} ms, p99 {p99:.2f} ms")


weights = {path: len(request("GET", path)) for path in
           ("/", "/dashboard/app.js", "/dashboard/app.css", "/dashboard/icon.svg")}
overview = len(request("GET", "/v1/dashboard"))
print(f"page weight: {sum(weights.values())} bytes ({weights}); overview answer {overview} bytes")

driver = browser()
try:
    renders = []
    for attempt in range(5):
        driver.get("about:blank")
        driver.get(LINK)
        renders.append(mark(driver, "colony-overview-rendered"))
        driver.execute_script("sessionStorage.clear()")
    print(f"first render of the overview: median {statistics.median(renders):.0f} ms "
          f"(runs {[round(r) for r in renders]})")
    driver.get(LINK)
    mark(driver, "colony-overview-rendered")
    driver.get(LINK.split("#")[0] + "#tasks")
    tasks = mark(driver, "colony-tasks-rendered")
    print(f"first render of the tasks view (200 rows of 10 000): {tasks:.0f} ms")
finally:
    driver.quit()

print("request latency, no dashboard open:")
quiet = latencies()
summary("GET /v1/limits", quiet[0])
summary("reserve + release (two durable writes)", quiet[1])

# What ten dashboards ask of the node, without the browsers that share its two cores:
# each overview read (and the alerts beside it) at the page's fastest, every 500 ms.
stop = threading.Event()


def poll():
    since = 0
    while not stop.is_set():
        overview = json.loads(request("GET", f"/v1/dashboard?since_ms={since}"))
        for series in overview["history"]:
            for at, _ in series["points"]:
                since = max(since, at)
        request("GET", "/v1/alerts?limit=8")
        stop.wait(0.5)


pollers = [threading.Thread(target=poll) for _ in range(DASHBOARDS)]
for thread in pollers:
    thread.start()
print(f"request latency, {DASHBOARDS} dashboards' requests without browsers (each every 500 ms):")
polled = latencies()
summary("GET /v1/limits", polled[0])
summary("reserve + release (two durable writes)", polled[1])
stop.set()
for thread in pollers:
    thread.join()

drivers = [browser() for _ in range(DASHBOARDS)]
try:
    for d in drivers:
        d.get(LINK)
    for d in drivers:
        mark(d, "colony-overview-rendered")
    print(f"request latency, {DASHBOARDS} headless Chromium dashboards open on the same two cores (live):")
    busy = latencies()
    summary("GET /v1/limits", busy[0])
    summary("reserve + release (two durable writes)", busy[1])
finally:
    for d in drivers:
        d.quit()
print("all checks passed")
