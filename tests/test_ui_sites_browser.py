"""The dashboard of FATE across sites in a real headless Chromium: each party's server shows its own
party's view of a job; the initiator's shows every party's status (as the other servers report it).

Two of test_fate_sites' servers (the guest and the second host), with certificates made here.
"""
from __future__ import annotations

import pytest

from test_fate_sites import GUEST, HOST2, Sites, _job_with_host2, submit_until_running, wait_end
from test_ui_browser import ARTIFACTS, By, browser, until  # noqa: F401 - browser is a fixture


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    s = Sites(tmp_path_factory.mktemp("ui-sites"))
    try:
        for party in (GUEST, HOST2):
            s.start(party)
        yield s
    finally:
        s.close()


def party_rows(browser) -> dict[str, tuple[str, str]]:
    """'role party' -> (status, where it runs) of the job page's Parties table."""
    out = {}
    for tr in browser.find_elements(By.CSS_SELECTOR, "#party-rows tbody tr[data-party]"):
        out[tr.get_attribute("data-party")] = (tr.get_attribute("data-status"),
                                               tr.find_elements(By.TAG_NAME, "td")[4].text)
    return out


def test_each_server_shows_its_party_s_view_and_the_initiator_every_party(browser, sites):
    guest, job_id = submit_until_running(sites, *_job_with_host2(600), HOST2)
    guest_page = sites.servers[GUEST].http_url + f"/ui/#/fate/{job_id}"
    host_page = sites.servers[HOST2].http_url + f"/ui/#/fate/{job_id}"

    browser.get(guest_page)
    want = {f"guest {GUEST}": ("running", "this server"), f"host {HOST2}": ("running", "its own server")}
    until(lambda: party_rows(browser) == want, f"every party running on the initiator's dashboard: {want}")
    browser.save_screenshot(str(ARTIFACTS / "fate-sites-guest.png"))

    browser.get(host_page)
    until(lambda: party_rows(browser) == {f"host {HOST2}": ("running", "this server")},
          "only its own party on the host's dashboard")
    browser.save_screenshot(str(ARTIFACTS / "fate-sites-host.png"))

    assert guest.job.stop(job_id)["retcode"] == 0
    assert wait_end(guest, job_id) == "canceled"
    until(lambda: party_rows(browser) == {f"host {HOST2}": ("canceled", "this server")}, "the host's part cancelled")
    browser.get(guest_page)
    until(lambda: {s for s, _ in party_rows(browser).values()} == {"canceled"}, "every party cancelled at the guest",
          timeout=60)
