"""The case loop in the operator console (issue #20), in headless Chromium.

An operator sends an incident to the grid platform from its page (上报网格平台, an event
class chosen), follows the link to the case in ``reported``, and moves it accepted → filed
→ dispatched (an assignee required) with the form, which offers only the steps the server
allows; the timeline shows each step and the incident's linked cases show the state. The
case list shows the cases with their states and its "overdue only" filter keeps the
overdue one. A step the case no longer allows (it moved meanwhile, unseen by a page without
live updates) shows the server's 409. The screenshot goes to tests/.artifacts/.
"""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.sync_api import BrowserContext, Page, expect

from storage.incidents import (
    ArchivedClip,
    NewIncident,
    create_incident,
    end_incident,
    mark_archived,
)
from storage.models import utcnow
from tests.e2e.conftest import Console, screenshot, signed_in
from tests.e2e.test_console_csp import WATCH_VIOLATIONS

CLASS = "0201"  # 设施遮挡/损坏: not the default class of a crowd incident (0101)


def _incident(console: Console) -> tuple[str, str]:
    """A crowd incident with an archived clip, straight in the database (no waiting for
    motion); its id and the clip's SHA-256."""
    services = console.app.state.services
    with services.tx() as session:
        row = create_incident(
            session, NewIncident(console.camera_id, "XL-G-001", "crowd", utcnow())
        )
        # Ended: an open incident of a camera a worker takes over later is closed as
        # interrupted, its clip failed (storage.incidents.close_interrupted).
        end_incident(session, row.id, utcnow())
        key = f"clips/{console.camera_id}/cases/{row.id}.mp4"
        info = services.objects.put_bytes(key, b"not really a clip", "video/mp4")
        mark_archived(session, row.id, ArchivedClip(key, info.sha256, 17, 1.0, None, None))
        return row.id, info.sha256


def _overdue_case(console: Console) -> str:
    """A case the platform filed, dispatched with a deadline already past."""
    created = console.http.post(
        "/api/v1/cases",
        json={"external_ref": "GP-LATE-1", "title": "路灯损坏 broken lamp", "kind": "other"},
    )
    assert created.status_code == 201, created.text
    case_id: str = created.json()["id"]
    past = (utcnow() - timedelta(hours=1)).isoformat()
    moved = console.http.post(
        f"/api/v1/cases/{case_id}/transitions",
        json={"to": "dispatched", "assignee": "市政 municipal", "deadline_at": past},
    )
    assert moved.status_code == 200 and moved.json()["overdue"], moved.text
    return case_id


def offered(page: Page) -> list[str]:
    options: list[str] = page.eval_on_selector_all(
        "#case-to option", "options => options.map(o => o.value)"
    )
    return options


def move(page: Page, to: str, assignee: str | None = None, note: str | None = None) -> None:
    page.select_option("#case-to", to)
    if assignee is not None:
        page.fill("#case-assignee", assignee)
    if note is not None:
        page.fill("#case-note", note)
    page.click("#case-move")
    expect(page.locator(f"#timeline tbody tr[data-to='{to}']")).to_be_visible()
    expect(page.locator("#case-state")).to_have_attribute("class", f"badge case-{to}")


def test_operator_reports_an_incident_and_handles_the_case(
    console: Console, context: BrowserContext
) -> None:
    incident_id, sha256 = _incident(console)
    context.add_init_script(WATCH_VIOLATIONS)
    page = signed_in(context, console)
    page.goto(f"{console.url}/console/#/incidents/{incident_id}")

    # Send it to the grid platform under a class picked from GET /cases/classes.
    expect(page.locator(f"#report-class option[value='{CLASS}']")).to_be_attached()
    page.select_option("#report-class", CLASS)
    page.fill("#report-note", "护栏倒伏 fence down")
    page.click("#report")
    link = page.locator("#report-result a")
    expect(link).to_be_visible()
    case_href = link.get_attribute("href") or ""
    case_id = case_href.removeprefix("#/cases/")
    assert case_id.startswith("case_"), case_href
    expect(page.locator(f"#incident-cases li[data-id='{case_id}'] .badge")).to_have_text("Reported")

    # Follow it to the case page: reported, its evidence, only the steps allowed offered.
    link.click()
    expect(page.locator("#case-state")).to_have_text("Reported")
    expect(page.locator("#case-facts")).to_contain_text(CLASS)
    expect(page.locator(f"#case-incidents li[data-id='{incident_id}']")).to_contain_text(sha256)
    assert offered(page) == ["accepted", "rejected"]

    move(page, "accepted", note="核实属实")
    assert offered(page) == ["filed"]
    move(page, "filed")
    assert offered(page) == ["dispatched"]
    page.select_option("#case-to", "dispatched")
    page.click("#case-move")  # no assignee: refused before anything is sent
    expect(page.locator("#case-error")).to_contain_text("assignee")
    move(page, "dispatched", assignee="网格员 张三 grid worker", note="请现场处置")
    assert offered(page) == ["handling"]
    expect(page.locator("#case-assignee-now")).to_have_text("网格员 张三 grid worker")

    rows = page.locator("#timeline tbody tr")
    expect(rows).to_have_count(4)
    steps = page.eval_on_selector_all(
        "#timeline tbody tr", "rows => rows.map(r => [r.dataset.from, r.dataset.to])"
    )
    assert steps == [
        ["", "reported"],
        ["reported", "accepted"],
        ["accepted", "filed"],
        ["filed", "dispatched"],
    ]
    timeline = page.locator("#timeline tbody").inner_text()
    assert "核实属实" in timeline and "请现场处置" in timeline and "值班员 Li" in timeline
    expect(rows.nth(3)).to_contain_text("网格员 张三 grid worker")

    screenshot(page, "console-case.png")

    case = console.http.get(f"/api/v1/cases/{case_id}").json()
    assert (case["state"], case["class_code"]) == ("dispatched", CLASS)
    assert case["assignee"] == "网格员 张三 grid worker"
    assert case["incident_ids"] == [incident_id]

    # The incident's linked cases follow the case's state.
    page.click(f"#case-incidents li[data-id='{incident_id}'] a")
    expect(page.locator(f"#incident-cases li[data-id='{case_id}'] .badge")).to_have_text(
        "Dispatched"
    )

    # The list: both cases with their states; "overdue only" keeps the late one.
    late_id = _overdue_case(console)
    page.click("#nav a[href='#/cases']")
    mine = page.locator(f"#cases tr[data-id='{case_id}']")
    late = page.locator(f"#cases tr[data-id='{late_id}']")
    expect(mine).to_have_attribute("data-state", "dispatched")
    expect(mine).to_contain_text("网格员 张三 grid worker")
    expect(late).to_have_class(re.compile(r"\boverdue\b"))
    expect(late.locator(".badge.due-overdue")).to_be_visible()
    page.check("#f-overdue")
    expect(mine).to_have_count(0)
    expect(late).to_be_visible()
    page.uncheck("#f-overdue")
    page.select_option("#f-state", "dispatched")
    expect(mine).to_be_visible()
    page.select_option("#f-state", "reported")
    expect(page.locator("#cases tbody tr")).to_have_count(0)
    page.select_option("#f-state", "")
    expect(mine).to_be_visible()
    screenshot(page, "console-cases.png")

    # A page without live updates offers a step the case has left: the server's 409 shows.
    stale = context.new_page()
    stale.route("**/api/v1/events/stream", lambda route: route.abort())
    stale.goto(f"{console.url}/console/#/cases/{late_id}")
    expect(stale.locator("#case-state")).to_have_text("Dispatched")
    moved = console.http.post(f"/api/v1/cases/{late_id}/transitions", json={"to": "handling"})
    assert moved.status_code == 200, moved.text
    stale.select_option("#case-to", "handling")
    stale.click("#case-move")
    expect(stale.locator("#case-error")).to_contain_text("not allowed")
    expect(stale.locator("#case-error")).to_contain_text("is handling")
    expect(stale.locator("#case-state")).to_have_text("Handling")  # refreshed after the 409
    assert offered(stale) == ["handled"]

    assert page.evaluate("window.__csp") == []
    assert stale.evaluate("window.__csp") == []
