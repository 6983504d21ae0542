"""Debian's Chromium, headless, driven through Selenium and chromedriver: the one
setup the dashboard's browser tests and benchmark share."""

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def chromium(binary, chromedriver, window="1400,1100", extra=()):
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--window-size={window}", *extra):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(20)
    return driver
