"""The dashboard in a real headless Chromium (selenium + Debian's chromium and chromium-driver).

Screenshots land in tests/artifacts/ (gitignored) for a person to look at.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from taskhub.v1 import task_pb2 as pb

from conftest import http, wait_for

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WAIT = 20.0  # upper bound for the page to catch up; the machine may be busy

webdriver = pytest.importorskip("selenium.webdriver")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip("chromium and chromium-driver are not installed (make test installs them)", allow_module_level=True)

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for drivers online
    profile = tempfile.mkdtemp(prefix="taskhub-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,900"):
        opts.add_argument(arg)
    downloads = Path(profile) / "downloads"
    downloads.mkdir()
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(predicate, what: str, timeout: float = 0):
    """Wait for the page; a DOM node replaced under us just means 'look again'."""
    def attempt():
        try:
            return predicate()
        except StaleElementReferenceException:
            return None
    return wait_for(attempt, timeout=timeout or WAIT, interval=0.05, what=what)


def row_status(browser, task_id) -> str | None:
    rows = browser.find_elements(By.CSS_SELECTOR, f'#task-rows tr[data-id="{task_id}"]')
    return rows[0].get_attribute("data-status") if rows else None


def open_list(browser, server):
    browser.get(server.http_url + "/ui/#/tasks")
    until(lambda: browser.find_element(By.ID, "live-state").text == "live", "the live task stream")


def test_the_list_shows_a_new_task_live(browser, server, client):
    open_list(browser, server)
    task = client.create_task(argv=["sh", "-c", "sleep 1"], name="appears-live")
    # No reload and no polling in the page: the row comes from the WatchTasks stream.
    until(lambda: row_status(browser, task.id), "the new task's row")
    until(lambda: row_status(browser, task.id) == "SUCCESS", "the row to follow the task to success")
    browser.save_screenshot(str(ARTIFACTS / "tasks-list.png"))


def test_create_from_the_form_and_cancel_from_the_ui(browser, server, client):
    open_list(browser, server)
    browser.find_element(By.ID, "new-task").click()
    form = browser.find_element(By.ID, "create-form")
    form.find_element(By.NAME, "name").send_keys("from-the-form")
    form.find_element(By.NAME, "command").send_keys("echo started; sleep 60")
    browser.find_element(By.ID, "create-submit").click()
    task = until(lambda: next((t for t in client.list_tasks().tasks if t.spec.name == "from-the-form"), None),
                 "the task created from the form")
    assert list(task.spec.argv) == ["sh", "-c", "echo started; sleep 60"]
    until(lambda: row_status(browser, task.id) == "RUNNING", "the row to show running")
    browser.find_element(By.CSS_SELECTOR, f'#task-rows tr[data-id="{task.id}"] button[data-action="cancel"]').click()
    until(lambda: browser.find_element(By.ID, "confirm-dialog").is_displayed(), "the confirmation")
    browser.find_element(By.ID, "confirm-ok").click()
    until(lambda: row_status(browser, task.id) == "CANCELLED", "the row to show cancelled")
    assert client.get_task(task.id).status == pb.TASK_STATUS_CANCELLED


def log_lines(browser) -> list[tuple[int, str]]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#log .line')].map(e => [Number(e.dataset.seq), e.querySelector('.text').textContent])")


def test_the_log_follows_and_a_reconnect_loses_nothing(browser, server, client):
    script = ("printf '\\033[1;32mgreen start\\033[0m\\n'; "
              "for i in $(seq 0 79); do echo line-$i; sleep 0.05; done")
    task = client.create_task(argv=["sh", "-c", script], name="chatty")
    browser.get(server.http_url + f"/ui/#/tasks/{task.id}")
    # Live: lines show while the task is still running.
    until(lambda: len(log_lines(browser)) >= 10, "the first lines")
    assert client.get_task(task.id).status == pb.TASK_STATUS_RUNNING, "the log should be followed while the task runs"
    # Break the stream mid-log, as a network failure would; the page resumes from the next line number.
    browser.execute_script("window.taskhubUI.dropLogStream()")
    until(lambda: browser.find_element(By.ID, "log-info").get_attribute("data-ended") == "true", "the log's end")
    info = browser.find_element(By.ID, "log-info")
    assert int(info.get_attribute("data-reconnects")) >= 1
    lines = log_lines(browser)
    seqs = [s for s, _ in lines]
    assert seqs == list(range(len(seqs))), "line numbers must be complete, in order, each once"
    texts = [t for _, t in lines]
    assert [t for t in texts if t.startswith("line-")] == [f"line-{i}" for i in range(80)]
    assert "green start" in texts
    # ANSI colours are rendered, not printed as escape codes.
    span = browser.find_element(By.CSS_SELECTOR, "#log span.ansi")
    assert span.text == "green start" and span.value_of_css_property("font-weight") in ("700", "bold")
    assert not any("\x1b" in t or "[0m" in t for t in texts)
    assert client.wait(task.id).status == pb.TASK_STATUS_SUCCESS
    browser.save_screenshot(str(ARTIFACTS / "task-log.png"))
    # The download is the whole log as plain text.
    browser.find_element(By.ID, "download-log").click()
    saved = browser.downloads / f"task-{task.id}.log"
    until(lambda: saved.exists() and saved.read_text().endswith("line-79\n"), "the downloaded log")
    downloaded = saved.read_text().splitlines()
    assert downloaded[1:] == [f"line-{i}" for i in range(80)] and downloaded[0] == "green start"


def test_nodes_groups_and_api_pages_render(browser, server, client):
    # The server keeps each node's recent usage; the page draws it as it opens.
    until(lambda: len(http("GET", server.http_url + "/v1/nodes").json()["nodes"][0]["usage_history"]) >= 2,
          "two usage samples of the local node")
    browser.get(server.http_url + "/ui/#/nodes")
    until(lambda: browser.find_elements(By.CSS_SELECTOR, "#node-rows tr[data-node] svg.spark polyline"),
          "the node row with its usage charts")
    browser.save_screenshot(str(ARTIFACTS / "nodes.png"))
    template = {"name": "ui-demo", "task_groups": [{"tasks": [{"name": "a", "config": {"command": "echo a"}},
                                                              {"name": "b", "config": {"command": "echo b"}}]}]}
    assert http("POST", server.http_url + "/api/task/task_group", template).status == 200
    assert http("POST", server.http_url + "/api/task/task_group/deploy", {"name": "ui-demo"}).status == 200
    browser.get(server.http_url + "/ui/#/groups")
    until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#instances .chip")) == 2, "the instance's two tasks")
    browser.get(server.http_url + "/ui/api")
    until(lambda: browser.find_elements(By.CSS_SELECTOR, 'details[data-operation="TaskService_WatchTasks"]'),
          "the API page listing WatchTasks")


def submit_hetero_lr_example(server) -> str:
    """FATE's published hetero LR job (fewer iterations) on a real server; returns its job id."""
    from taskhub.v1 import flow_service_pb2 as fpb
    from test_flow import flow, with_tables
    from test_flow_federation import published
    stub = flow(server)
    with_tables(stub)
    dsl, conf = published("hetero_lr_normal", hetero_lr_0={"max_iter": 3})
    return stub.SubmitJob(fpb.SubmitJobRequest(dsl_json=dsl, conf_json=conf)).job_id


def test_fate_job_graph_parameters_metrics_and_output(browser, server):
    """A FATE job's DSL as a graph coloured by status, a component's parameters, metric charts and output rows.

    Uses FATE's published hetero LR example (FATE_FLOW.md)."""
    job_id = submit_hetero_lr_example(server)
    browser.get(server.http_url + f"/ui/#/fate/{job_id}")
    until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#dsl-graph g.node")) >= 5, "the DSL graph")
    until(lambda: browser.find_elements(By.CSS_SELECTOR, '#dsl-graph g.node.fs-success[data-component="evaluation_0"]'),
          "evaluation_0 to succeed", timeout=180)
    browser.find_element(By.CSS_SELECTOR, '#dsl-graph g.node[data-component="hetero_lr_0"]').click()
    until(lambda: browser.find_elements(By.CSS_SELECTOR, "#component-params pre.json"), "hetero_lr_0's parameters")
    # The loss is the arbiter's (the only party that can decrypt it).
    Select(browser.find_element(By.ID, "party-picker")).select_by_visible_text("arbiter 10000 · success")
    until(lambda: browser.find_elements(By.CSS_SELECTOR, "#component-metrics svg.chart"), "the loss chart")
    browser.find_element(By.CSS_SELECTOR, '#dsl-graph g.node[data-component="evaluation_0"]').click()
    until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#component-metrics svg.chart")) >= 2, "ROC and KS curves")
    browser.find_element(By.CSS_SELECTOR, '#dsl-graph g.node[data-component="intersection_0"]').click()
    until(lambda: browser.find_elements(By.CSS_SELECTOR, "#output-table tbody tr"), "intersection_0's output rows")
    browser.save_screenshot(str(ARTIFACTS / "fate-job.png"))
