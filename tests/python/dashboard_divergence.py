"""Drives Debian's Chromium (headless, through Selenium and chromedriver) to the
dashboard of a cluster node that has seen another node's log diverge: the red banner
above the views says so with the evidence, and the overview's cluster card counts it.

Usage: dashboard_divergence.py LINK CHROMIUM CHROMEDRIVER EVIDENCE
Prints "all checks passed" when every check holds.
"""

import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from headless import chromium

LINK, CHROMIUM, CHROMEDRIVER, EVIDENCE = sys.argv[1:5]

driver = chromium(CHROMIUM, CHROMEDRIVER)


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


try:
    driver.get(LINK)
    banner = driver.find_element(By.ID, "banner")
    WebDriverWait(driver, 15, poll_frequency=0.05).until(
        lambda d: banner.is_displayed() and "DIVERGENCE" in banner.text,
        "the divergence banner shows")
    text = banner.text
    check(EVIDENCE in text, f"the banner gives the evidence ({EVIDENCE!r} in {text!r})")
    check(banner.get_attribute("role") == "alert", "the banner is announced as an alert")
    card = driver.find_element(By.CSS_SELECTOR, '[data-card="cluster"]')
    check("1 divergence" in card.text, f"the cluster card counts it: {card.text!r}")
    # It stays above the other views.
    driver.find_element(By.CSS_SELECTOR, 'nav a[data-view="log"]').click()
    WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "view-log").is_displayed())
    check(banner.is_displayed(), "the banner stays above the decision log")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    check(not errors, f"no error in the browser's console: {errors}")
    print("all checks passed")
finally:
    driver.quit()
