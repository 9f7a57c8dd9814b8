"""Logging in through the dashboard's form, shared by the browser tests."""

from __future__ import annotations

from typing import Any


def log_in(page: Any, url: str, token: str) -> None:
    """Submit the login form at `url` and wait for the page the POST leads to.

    Clicking without waiting leaves the form's navigation (POST /login, then the redirect)
    in flight: a `page.goto` right after it aborts that navigation, which Chromium reports as
    a failed request, and a check on the next page may read the login page instead.
    """
    page.goto(url)
    page.get_by_test_id("token-input").fill(token)
    with page.expect_navigation():
        page.get_by_test_id("login-button").click()
    page.wait_for_load_state("load")
