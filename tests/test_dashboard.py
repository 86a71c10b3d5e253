"""The dashboard: HTTP behaviour with FastAPI's TestClient, and a director's session in a real browser
(Playwright driving Debian's chromium) against a `milimo dashboard` process and a real render."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import copy_rendered_example, free_port, milimo, milimo_process
from fastapi.testclient import TestClient

from storyboards.store import Store

# One worker runs this module's tests, in order (they share a module-scoped render).
pytestmark = pytest.mark.xdist_group("dashboard")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def screenshot(page, name: str, tmp_path: Path) -> Path:
    """The page as a picture: into docs/ when MILIMO_WRITE_SCREENSHOTS=1 (refreshing the README's pictures),
    else beside the test, so a plain test run never changes the repository."""
    target = (DOCS if os.environ.get("MILIMO_WRITE_SCREENSHOTS") == "1" else tmp_path) / name
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    return target
CHROMIUM = "/usr/bin/chromium"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tiny_model_dir, prefect_api, rendered_example_template):
    """The example storyboard rendered through the CLI (a copy of the session's): what a director finds in the
    store."""
    board, db, out = copy_rendered_example(rendered_example_template, tmp_path_factory.mktemp("dash"))
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return {"board": board, "db": db, "out": out, "env": env, "model": str(tiny_model_dir)}


def _client(rendered, **kw) -> TestClient:
    from dashboard import DashboardSettings, create_app

    return TestClient(create_app(DashboardSettings(db_url=rendered["db"], out_root=rendered["out"],
                                                   model=rendered["model"], **kw)),
                      base_url="http://127.0.0.1:8765")


def test_pages_files_and_errors(rendered):
    client = _client(rendered)
    index = client.get("/")
    assert index.status_code == 200 and "lighthouse" in index.text and "5/5" in index.text
    page = client.get("/s/lighthouse")
    assert page.text.count('class="card state-done"') == 5 and page.text.count("/files/take/") == 5
    assert "⟶" in page.text  # shots that continue one another are linked
    shot = client.get("/s/lighthouse/shot/harbour-pan")
    assert shot.status_code == 200 and "Rerender from this shot" in shot.text
    take = Store.open(rendered["db"]).current_take("lighthouse", "harbour-pan")
    whole = client.get(f"/files/take/{take.id}/mp4")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/files/take/{take.id}/mp4", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and len(part.content) == 100 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert client.get(f"/files/take/{take.id}/mp4", headers={"Range": "bytes=99999999-"}).status_code == 416
    assert client.get("/files/storyboard/lighthouse/preview").status_code == 200
    for url in ("/s/nope", "/s/lighthouse/shot/nope", "/files/take/999999/mp4", "/files/take/1/passwd",
                "/files/storyboard/lighthouse/..%2F..%2Fetc%2Fpasswd", "/files/storyboard/nope/preview"):
        response = client.get(url)
        assert response.status_code == 404 and "Traceback" not in response.text, url
        assert "read-only" not in response.text, url  # an error page of a writable dashboard says nothing of modes
    for url, said in (("/s/lighthouse/shot/harbour-pan?note_frame=x", "note_frame: &#39;x&#39;"),
                      ("/s/lighthouse/shot/harbour-pan?a=1&b=%3Cb%3E", "b: &#39;&lt;b&gt;&#39;"),
                      ("/s/lighthouse/shot/harbour-pan/take/x/log", "no take &#39;x&#39;")):
        response = client.get(url)  # a hand-made URL: the error page, naming the parameter, not FastAPI's JSON
        assert response.status_code in (400, 404) and said in response.text, (url, response.text[-500:])
        assert response.headers["content-type"].startswith("text/html") and '"detail"' not in response.text, url

    # The take's log (what its render said) and the queue (nothing renders now; the worker that rendered)
    log = client.get("/s/lighthouse/shot/harbour-pan/take/1/log")
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain"), log.text
    assert log.headers["x-content-type-options"] == "nosniff"
    assert "lighthouse: shot harbour-pan take 1 on " in log.text and "harbour-pan take 1 done in" in log.text
    assert "harbour-pan: stage1 step" in log.text, log.text
    assert 'class="take-log" href="/s/lighthouse/shot/harbour-pan/take/1/log"' in client.get(
        "/s/lighthouse/shot/harbour-pan").text
    queue = client.get("/queue")
    assert queue.status_code == 200 and "Nothing renders now." in queue.text
    assert queue.text.count('class="worker"') == 1 and "<td>idle</td>" in queue.text, queue.text



def test_actions_need_csrf_same_origin_and_not_read_only(rendered):
    client = _client(rendered)
    client.get("/s/lighthouse")  # sets the CSRF cookie
    client.cookies.set("milimo_user", "Ada")
    csrf = client.cookies.get("milimo_csrf")
    origin = {"Origin": "http://127.0.0.1:8765"}
    assert client.post("/s/lighthouse/shot/lamp-close/pin", data={"take": "1"}, headers=origin).status_code == 403
    assert client.post("/s/lighthouse/shot/lamp-close/pin", data={"take": "1", "csrf": csrf},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    bad = client.post("/s/lighthouse/shot/lamp-close/rerender", data={"csrf": csrf, "steps": "-5", "seed": "x1"},
                      headers=origin)
    assert bad.status_code == 422 and 'data-error="steps"' in bad.text and 'data-error="seed"' in bad.text
    assert Store.open(rendered["db"]).overrides("lighthouse") == {}  # nothing stored
    read_only = _client(rendered, read_only=True)
    page = read_only.get("/s/lighthouse/shot/lamp-close")
    assert "Rerender from this shot" not in page.text and "Pin take" not in page.text and "read-only" in page.text
    assert read_only.post("/s/lighthouse/cancel", data={"csrf": "x"}, headers=origin).status_code == 403


def test_a_token_is_required_off_loopback(rendered, tmp_path):
    guarded = _client(rendered, token="s3cret")
    assert guarded.get("/").status_code == 401
    assert guarded.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    env = {k: v for k, v in rendered["env"].items() if k != "MILIMO_DASHBOARD_TOKEN"}
    refused = milimo("dashboard", "--host", "0.0.0.0", "--db", rendered["db"], environ=env, timeout=60)
    assert refused.returncode == 2 and "no token" in refused.stderr and "Traceback" not in refused.stderr


# ------------------------------------------------------------------ a director in a real browser
@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: `make setup` installs it (apt-get install chromium)")
        pytest.skip("no /usr/bin/chromium: `make setup` installs it as root (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def dashboard_url(rendered):
    port = free_port()
    proc = milimo_process("dashboard", "--port", port, "--db", rendered["db"], "--out", rendered["out"], "--model",
                          rendered["model"], environ=rendered["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


def test_a_director_reruns_compares_and_pins_in_the_browser(browser, dashboard_url, rendered, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(f"{dashboard_url}/s/lighthouse")
    cards = page.locator(".card")
    assert cards.count() == 5
    page.wait_for_function("[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, "dashboard-storyboard.png", tmp_path)

    # No name yet: nothing to decide or rerender with. Then Ada says who she is.
    page.goto(f"{dashboard_url}/s/lighthouse/shot/lamp-close")
    assert page.locator("form.verdict").count() == 0 and page.locator("form.rerender").count() == 0
    page.fill("header input[name=name]", "Ada")
    page.click("header form.whoami button")
    assert page.locator("#user").inner_text() == "Ada"

    # An invalid value: the message next to the field, nothing stored.
    page.goto(f"{dashboard_url}/s/lighthouse/shot/lamp-close")
    page.fill("input[name=steps]", "-5")
    page.click("form.rerender button[type=submit]")
    assert "should be greater than or equal to 1" in page.locator('[data-error="steps"]').inner_text()
    store = Store.open(rendered["db"])
    assert store.overrides("lighthouse") == {} and len(store.takes("lighthouse", "lamp-close")) == 1

    # A new seed (and a prompt with HTML in it): the new take appears, done, and the prompt is inert text.
    page.goto(f"{dashboard_url}/s/lighthouse/shot/lamp-close")
    page.fill("input[name=seed]", "123")
    page.fill("textarea[name=prompt]", XSS)
    page.click("form.rerender button[type=submit]")
    assert "rerender of lamp-close" in page.locator(".message").inner_text()  # said at once, once
    # Typing while it renders: the page updates in place and never loses the text.
    page.fill("textarea[name=negative_prompt]", "typed while it renders")
    page.wait_for_selector('tr.take[data-number="2"][data-status="succeeded"]', timeout=180_000)
    assert page.input_value("textarea[name=negative_prompt]") == "typed while it renders"
    assert page.locator('tr.take[data-number="2"] td.prompt').first.inner_text() == XSS
    assert page.locator("td.prompt img").count() == 0 and dialogs == []
    # The take is recorded a moment before the render lets go of the shot; until then the page's live state
    # changes once more (and the page reloads), so a click made meanwhile can be lost.
    deadline = time.monotonic() + 60
    while (state := page.request.get(f"{dashboard_url}/api/s/lighthouse/state").json()["lamp-close"]) != {
            **state, "state": "done", "take": 2} and time.monotonic() < deadline:
        time.sleep(0.3)

    # Compare the two takes side by side, with the spec diff, then pin the older one.
    page.goto(f"{dashboard_url}/s/lighthouse/shot/lamp-close?a=1&b=2")
    assert page.locator(".compare video").count() == 2 and "seed" in page.locator("table.diff").inner_text()
    screenshot(page, "dashboard-shot.png", tmp_path)
    preview = Path(rendered["out"]) / "lighthouse" / "preview.mp4"
    built = preview.stat().st_mtime_ns
    page.click("text=Pin take 1")
    page.wait_for_url(f"{dashboard_url}/s/lighthouse")
    assert "Ada pinned lamp-close take 1" in page.locator(".message").inner_text()
    card = page.locator('.card[data-shot="lamp-close"]')
    assert card.get_attribute("data-take") == "1" and "pinned" in card.inner_text()
    assert "seed 123" not in card.inner_text() and XSS not in card.inner_text()  # take 1's seed and prompt
    deadline = time.monotonic() + 120  # the preview and contact sheet are built again with take 1
    while preview.stat().st_mtime_ns == built and time.monotonic() < deadline:
        time.sleep(0.5)
    assert preview.stat().st_mtime_ns != built
    assert store.current_take("lighthouse", "lamp-close").number == 1
    page.goto(f"{dashboard_url}/s/lighthouse")
    page.wait_for_timeout(2000)  # a poll or two: the pinned take stays current
    assert page.locator('.card[data-shot="lamp-close"]').get_attribute("data-take") == "1"
    assert dialogs == []


def test_the_cut_plays_frame_by_frame_with_its_shots_marked(browser, dashboard_url, rendered, tmp_path):
    """The cut player: the preview with one mark per shot, record timecode from the cut's start, a frame at a
    time with the arrows, a shot at a time, L to play and K to stop, J back; a shot's mark jumps to it, and "Note
    this frame" opens the shot with that frame of its take ready for a note."""
    import storyboards
    from storyboards.editorial import timecode

    board = storyboards.load(rendered["board"])
    first = board.shots[0]
    first_frames = round(first.duration) if hasattr(first, "duration") else None
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{dashboard_url}/s/lighthouse/play")
    page.fill("header input[name=name]", "Ada")
    page.click("header form.whoami button")
    page.wait_for_url(f"{dashboard_url}/s/lighthouse/play")
    page.wait_for_function("document.getElementById('cut').readyState >= 2")
    assert page.locator("#timeline li.shot").count() == len(board.shots)

    def frame() -> int:
        return page.evaluate("milimoPlayer.frame()")

    def shows(frames: int) -> None:
        page.wait_for_function("([id, text]) => document.getElementById(id).textContent === text",
                               arg=["tc", timecode(board.record_start + frames, board.fps)], timeout=10_000)

    shows(0)
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    shows(3)
    assert frame() == 3 and page.locator("#shot-frame").inner_text() == "3"
    page.keyboard.press("ArrowDown")  # the next shot
    second = page.locator("#timeline li.shot").nth(1)
    at = int(second.get_attribute("data-at"))
    shows(at)
    assert page.locator("#shot-label").inner_text().startswith(board.shots[1].shot_id)
    if first_frames is not None:
        assert at == int(page.locator("#timeline li.shot").nth(0).get_attribute("data-frames"))
    page.keyboard.press("l")
    page.wait_for_function(f"milimoPlayer.frame() > {at + 3}", timeout=10_000)
    page.keyboard.press("k")
    moved = frame()
    assert page.evaluate("document.getElementById('cut').paused")
    page.keyboard.press("j")
    page.wait_for_function(f"milimoPlayer.frame() < {moved}", timeout=10_000)
    page.keyboard.press("k")
    last = page.locator("#timeline li.shot").last
    last.locator("button").click()
    shows(int(last.get_attribute("data-at")))
    assert page.locator("#shot-label").inner_text().startswith(board.shots[-1].shot_id)
    # The editor's marker (the example's director's note on its first clip) is listed where the cut plays it.
    from storyboards.markers import cut_markers

    note = next(m for m in cut_markers(board) if m.name == "director: keep the horizon level")
    listed = page.locator(f'#markers li[data-frame="{note.frame}"][data-kind="marker"]')
    assert note.name in listed.inner_text() and note.shot_id in listed.inner_text()
    listed.locator("button").click()
    shows(note.frame)
    # A review note is listed where the cut plays its frame (its shot's first frame in the cut + frame - head).
    head = int(last.get_attribute("data-head"))
    noted = milimo("note", rendered["board"], board.shots[-1].shot_id, "1", "gull too big", "--frame", head + 2,
                   "--by", "Ben", "--db", rendered["db"], "--out", rendered["out"])
    assert noted.returncode == 0, noted.stderr
    page.reload()
    page.wait_for_function("document.getElementById('cut').readyState >= 2")
    at_last = int(last.get_attribute("data-at")) + 2
    listed = page.locator(f'#markers li[data-kind="note"][data-frame="{at_last}"]')
    assert "Ben: gull too big" in listed.inner_text()
    listed.locator("button").click()
    shows(at_last)
    last.locator("button").click()
    shows(int(last.get_attribute("data-at")))
    page.keyboard.press("ArrowRight")
    screenshot(page, "dashboard-player.png", tmp_path)
    head = int(last.get_attribute("data-head"))
    page.click("#note-here")
    page.wait_for_url(f"**/s/lighthouse/shot/{board.shots[-1].shot_id}?note_frame={head + 1}*")
    values = page.locator("form.note input[name=frame]").evaluate_all("fs => fs.map(f => f.value)")
    assert sorted(values)[-1] == str(head + 1) and values.count(str(head + 1)) == 1  # the current take's form


def test_two_takes_play_on_one_clock(browser, dashboard_url, rendered):
    """A/B: the two takes of a compare play, stop and step together, never more than half a frame apart."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{dashboard_url}/s/lighthouse/shot/lamp-close?a=1&b=2")
    page.wait_for_function("[...document.querySelectorAll('.compare video')].every(v => v.readyState >= 2)")
    fps = page.evaluate("milimoPlayer.fps")
    page.click("#ab-play")
    page.wait_for_function("milimoPlayer.frame() > 5", timeout=10_000)
    page.click("#ab-play")
    times = page.evaluate("[...document.querySelectorAll('.compare video')].map(v => [v.currentTime, v.paused])")
    assert all(paused for _, paused in times) and abs(times[0][0] - times[1][0]) <= 0.5 / fps, times
    stopped = page.evaluate("milimoPlayer.frame()")
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"milimoPlayer.frame() === {stopped + 1}")
    page.wait_for_function("(() => { const [a, b] = document.querySelectorAll('.compare video');"
                           " return Math.abs(a.currentTime - b.currentTime) < 1e-3; })()")
    assert page.locator("#ab-frame").inner_text() == str(stopped + 1)
    visible = "[...document.querySelectorAll('.compare figure')].map(f => getComputedStyle(f).visibility)"
    page.keyboard.press("f")  # flip: one picture at a time, on the same frame
    assert page.evaluate(visible) == ["visible", "hidden"] and "showing A" in page.locator(".ab-controls").inner_text()
    page.click("#ab-flip")
    assert page.evaluate(visible) == ["hidden", "visible"] and page.evaluate("milimoPlayer.frame()") == stopped + 1
    # Either side can be any take ("as A", "as B" on each take), and the two swap.
    assert page.locator('tr.take[data-number="1"] a.as-b').get_attribute("href") == "?a=1&b=1"
    page.click("#ab-swap")
    page.wait_for_url("**/s/lighthouse/shot/lamp-close?a=2&b=1")
    assert page.locator(".compare figcaption").all_inner_texts() == ["A: take 2", "B: take 1"]


def test_two_directors_review_one_shot_and_neither_decision_is_lost(browser, dashboard_url, rendered, tmp_path):
    """Ada and Ben, each in a browser of their own, open the same shot. Ada approves; Ben, on the page he opened
    before, asks for changes: he is told what Ada did, and nothing of his is stored. Notes from both are kept and
    shown at their frames, escaped; the storyboard's card says the verdict."""
    store = Store.open(rendered["db"])
    shot_url = f"{dashboard_url}/s/lighthouse/shot/harbour"
    pages = {}
    for who in ("Ada", "Ben"):
        page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()  # a phone's width
        page.goto(shot_url)
        page.fill("header input[name=name]", who)
        page.click("header form.whoami button")
        assert page.locator("#user").inner_text() == who
        pages[who] = page
    ada, ben = pages["Ada"], pages["Ben"]
    assert ada.evaluate("document.documentElement.scrollWidth") <= 400  # the viewport meta: no 980 px page

    ada.fill('article[data-number="1"] form.verdict input[name=note]', "the light is right")
    ada.click('article[data-number="1"] button[value=approve]')
    assert "Ada marked harbour take 1 approved" in ada.locator(".message").inner_text()
    assert ada.locator('article[data-number="1"]').get_attribute("data-review") == "approved"

    ben.click('article[data-number="1"] button[value=needs-changes]')  # his page still shows it pending
    said = ben.locator(".message").inner_text()
    assert "since this page was shown, Ada marked take 1 approved" in said and "nothing was changed" in said
    assert ben.locator('article[data-number="1"]').get_attribute("data-review") == "approved"  # the page now
    review = next(r for r in store.reviews("lighthouse") if r.shot_id == "harbour")
    assert (review.state, review.by, [h[1] for h in review.history]) == ("approved", "Ada", ["Ada"])

    ben.fill('article[data-number="1"] textarea[name=text]', "boat too fast " + XSS)
    for frame, said in (("9999", "is not in the take"), ("3-x", "is not a frame")):
        ben.fill('article[data-number="1"] textarea[name=text]', "boat too fast")
        ben.fill('article[data-number="1"] input[name=frame]', frame)
        ben.click('article[data-number="1"] form.note button')
        assert said in ben.locator('[data-error="note-1"]').inner_text()
    ben.fill('article[data-number="1"] textarea[name=text]', "boat too fast " + XSS)
    ben.fill('article[data-number="1"] input[name=frame]', "3-5")
    ben.click('article[data-number="1"] form.note button')
    ada.reload()
    notes = ada.locator('article[data-number="1"] .notes li')
    assert notes.count() == 2 and "frame 3-5" in notes.nth(1).inner_text() and "Ben" in notes.nth(1).inner_text()
    assert ada.locator(".notes img").count() == 0
    screenshot(ada, "dashboard-review.png", tmp_path)

    ada.goto(f"{dashboard_url}/s/lighthouse")
    card = ada.locator('.card[data-shot="harbour"] .review')
    assert card.get_attribute("data-review") == "approved" and "Ada" in card.inner_text() \
        and "2 notes" in card.inner_text()
    # Filters stay in the URL: the shots with notes, then a text search.
    ada.select_option("form.filters select[name=only]", "has-notes")
    ada.click("form.filters button")
    with_notes = [ada.locator(".card").nth(i).get_attribute("data-shot") for i in range(ada.locator(".card").count())]
    assert "only=has-notes" in ada.url and with_notes == ["harbour", "harbour-pan"]  # the player's test noted the last
    assert f"{len(with_notes)} of 5 shots" in ada.inner_text("#shown")
    ada.goto(f"{dashboard_url}/s/lighthouse?q=PUSHES")  # in a prompt, whatever the case
    assert [ada.locator(".card").nth(i).get_attribute("data-shot") for i in range(ada.locator(".card").count())] \
        == ["lighthouse-push"]
    # Contrast of every button from its computed colours (WCAG AA: 4.5:1 for text).
    ratio = ada.evaluate("""() => {
        const lum = c => { const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map(v => v / 255)
            .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        return Math.min(...[...document.querySelectorAll("button")].map(button => {
            const s = getComputedStyle(button);
            const [a, b] = [lum(s.color), lum(s.backgroundColor)].sort((x, y) => y - x);
            return (a + 0.05) / (b + 0.05); })); }""")
    assert ratio >= 4.5, ratio


def test_decisions_need_a_name_and_a_stale_page_is_told(rendered):
    client = _client(rendered)
    client.get("/s/lighthouse/shot/harbour-pan")
    csrf, origin = client.cookies.get("milimo_csrf"), {"Origin": "http://127.0.0.1:8765"}
    nameless = client.post("/s/lighthouse/shot/harbour-pan/review", data={"csrf": csrf, "take": "1",
                                                                        "verdict": "reject"}, headers=origin)
    assert nameless.status_code == 400 and "give your name" in nameless.text
    named = client.post("/whoami", data={"csrf": csrf, "name": "Cy", "next": "//evil.example/"}, headers=origin,
                        follow_redirects=False)
    assert named.status_code == 303 and named.headers["location"] == "/"  # back to this dashboard only
    store = Store.open(rendered["db"])
    seen = store.decision_mark("lighthouse", "harbour-pan").token
    store.review_take("lighthouse", "harbour-pan", 1, store_state("needs changes"), "Dee")  # meanwhile, elsewhere
    stale = client.post("/s/lighthouse/shot/harbour-pan/pin", data={"csrf": csrf, "take": "1", "seen": seen},
                        headers=origin)
    assert stale.status_code == 409 and "Dee marked take 1 needs changes" in stale.text
    assert store.pinned_at("lighthouse", "harbour-pan") is None
    fresh = store.decision_mark("lighthouse", "harbour-pan").token
    done = client.post("/s/lighthouse/shot/harbour-pan/review", data={"csrf": csrf, "take": "1", "seen": fresh,
                                                                     "verdict": "reject"}, headers=origin,
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/s/lighthouse/shot/harbour-pan"
    assert next(r for r in store.reviews("lighthouse", "harbour-pan")).by == "Cy"
    assert "INJECTED" not in client.get("/s/lighthouse?message=INJECTED").text  # a URL's text is never shown


def test_two_quick_rerenders_of_a_shot_make_two_takes(browser, dashboard_url, rendered):
    """Seed 11, then seed 12 while the first still waits for the device: each renders its own seed as a take of
    its own. The test holds the host's only device (the real per-device lock) so the two overlap every time; the
    first used to start its take after the second had re-imported the shot, render seed 12, and the second then
    kept it as done."""
    from tasks.worker import device_pool, visible_devices

    store = Store.open(rendered["db"])
    before = len(store.takes("lighthouse", "harbour-pan"))
    page = browser.new_page()
    page.goto(f"{dashboard_url}/s/lighthouse/shot/harbour-pan")
    page.fill("header input[name=name]", "Ben")
    page.click("header form.whoami button")

    def rerender(seed: str) -> None:
        page.goto(f"{dashboard_url}/s/lighthouse/shot/harbour-pan")
        page.fill("input[name=seed]", seed)
        page.click("form.rerender button[type=submit]")
        assert "rerender of harbour-pan" in page.locator(".message").inner_text()

    def wait_for(what, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while not what():
            assert time.monotonic() < deadline, f"timed out: {what.__doc__}"
            time.sleep(0.2)

    with device_pool(tuple(visible_devices())).take():
        rerender("11")

        def first_waits():
            """the seed-11 render holds the shot and waits for the device"""
            return "harbour-pan" in store.leased("lighthouse") and store.spec("lighthouse", "harbour-pan").seed == 11

        wait_for(first_waits)
        rerender("12")

        def second_planned():
            """the seed-12 render re-imported the shot"""
            return store.spec("lighthouse", "harbour-pan").seed == 12

        wait_for(second_planned)
        time.sleep(1)  # the second render reaches the shot's lease, behind the first
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        takes = store.takes("lighthouse", "harbour-pan")[before:]
        if len(takes) >= 2 and all(t.status not in ("running", "pending") for t in takes):
            break
        time.sleep(1)
    specs = store.specs_by_hash(t.spec_hash for t in takes)
    assert [(specs[t.spec_hash]["seed"], t.status) for t in takes] == [(11, "succeeded"), (12, "succeeded")]
    assert store.current_take("lighthouse", "harbour-pan").number == takes[-1].number
    assert {t.requested_by for t in takes} == {"Ben"}


def test_each_person_has_a_token_of_their_own(rendered, tmp_path):
    """Off loopback each person can carry their own token: they act as themselves, whatever name was typed;
    milimo.toml keeps only its hash, and the dashboard may start beyond loopback with no shared token."""
    from dashboard.security import resolve_token
    from milimo.config import MilimoConfig

    config = tmp_path / "milimo.toml"
    config.write_text("[dashboard]\nport = 8765\n")
    tokens = {}
    for who in ("Ada", "Ben"):
        added = milimo("dashboard", "users", "add", who, "--config", config)
        assert added.returncode == 0 and "shown once" in added.stdout, added.stderr
        tokens[who] = added.stdout.split()[-1]
    assert all(t not in config.read_text() for t in tokens.values())
    users = dict(MilimoConfig.read(config).dashboard.users)
    assert sorted(users) == ["Ada", "Ben"] and resolve_token("0.0.0.0", None, None, users) is None
    assert milimo("dashboard", "users", "add", "", "--config", config).returncode == 2

    client = _client(rendered, users=users)
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    client.cookies.set("milimo_user", "Mallory")
    page = client.get(f"/s/lighthouse/shot/lighthouse-push?token={tokens['Ben']}")
    assert page.status_code == 200 and "you are <b id=\"user\">Ben</b> (your token)" in page.text
    noted = client.post("/s/lighthouse/shot/lighthouse-push/note", headers={"Origin": "http://127.0.0.1:8765"},
                        data={"csrf": client.cookies.get("milimo_csrf"), "take": "1", "text": "horizon tilts"},
                        follow_redirects=False)  # the token is a cookie now
    assert noted.status_code == 303, noted.text
    note = next(r for r in Store.open(rendered["db"]).reviews("lighthouse", "lighthouse-push")).notes[-1]
    assert (note.text, note.author) == ("horizon tilts", "Ben")


def store_state(value: str):
    from storyboards.store import ReviewState

    return ReviewState(value)


def _long_rerender(rendered, by: str):
    """A rerender of lighthouse-wide at 1000 steps (minutes, unless stopped), once its take is in stage 1:
    (process, take)."""
    proc = milimo_process("rerender", rendered["board"], "--from-shot", "lighthouse-wide", "--set", "steps=1000",
                          "--by", by, "--model", rendered["model"], "--db", rendered["db"], "--out", rendered["out"],
                          environ=rendered["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store.open(rendered["db"])
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and proc.poll() is None and not running:
        running = [t for t in store.running_takes("lighthouse") if (t.progress or {}).get("stage") == "stage1"]
        time.sleep(0.2)
    assert running, proc.communicate()[1][-2000:]
    return proc, running[0]


def test_a_director_stops_one_take_after_saying_so_twice(browser, dashboard_url, rendered, tmp_path):
    """The storyboard page says what renders now (step, time in, who asked) with a Stop link per take; the stop is
    asked on a page of its own ("Keep rendering" changes nothing), then only that take stops, recorded with who
    asked for it and who stopped it. The render it belongs to ends normally (exit 0) and says what was stopped."""
    proc, take = _long_rerender(rendered, "Cy")
    store = Store.open(rendered["db"])
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{dashboard_url}/s/lighthouse")
    assert "Give your name" in page.locator("main").inner_text() and page.locator("#cancel").count() == 0
    page.fill("header input[name=name]", "Ada")
    page.click("header form.whoami button")
    row = page.locator(f'tr.running-take[data-shot="lighthouse-wide"][data-number="{take.number}"]')
    assert "stage1 step" in row.inner_text() and "asked by Cy" in row.inner_text()
    screenshot(page, "dashboard-now.png", tmp_path)
    # The queue: the take rendering, where, who asked, its log as far as it got; the worker rendering it
    page.click("a.queue-link")
    queued = page.locator(f'#queue-running tr.running-take[data-shot="lighthouse-wide"][data-number="{take.number}"]')
    assert "stage1 step" in queued.inner_text() and "asked by Cy" in queued.inner_text()
    assert f"rendering lighthouse / lighthouse-wide take {take.number}" in page.locator("#queue-workers").inner_text()
    screenshot(page, "dashboard-queue.png", tmp_path)
    log = page.request.get(dashboard_url + queued.locator("a.take-log").get_attribute("href"))
    assert log.ok and "asked by Cy" in log.text() and "lighthouse-wide: stage1 step" in log.text(), log.text()
    page.go_back()
    row.locator("text=Stop…").click()
    assert page.locator("h1").inner_text() == f"Stop take {take.number} of lighthouse-wide?"
    screenshot(page, "dashboard-stop.png", tmp_path)
    page.click("#keep")
    page.wait_for_url(f"{dashboard_url}/s/lighthouse/shot/lighthouse-wide")
    time.sleep(1.5)
    assert store.take(take.id).status == "running" and store.take(take.id).cancel_requested_by is None
    page.locator(f'tr.take[data-number="{take.number}"] a.stop').click()
    page.click("text=Stop it")
    assert f"Ada asked lighthouse-wide take {take.number} to stop" in page.locator(".message").inner_text()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped: lighthouse-wide: Ada asked it to stop" in out, out
    assert "stopped: lighthouse-push: not rendered: lighthouse-wide before it was stopped" in out, out
    stopped = store.take(take.id)
    assert (stopped.status, stopped.requested_by, stopped.cancel_requested_by) == ("cancelled", "Cy", "Ada")
    assert "stopped by Ada" in (stopped.error or "")
    assert store.current_take("lighthouse", "lighthouse-wide").number < take.number  # the earlier take stands
    page.goto(f"{dashboard_url}/s/lighthouse/shot/lighthouse-wide")
    assert "stopped by Ada" in page.locator(f'tr.take[data-number="{take.number}"]').inner_text()
    page.locator(f'tr.take[data-number="{take.number}"] a.take-log').click()
    assert "cancelled" in page.locator("body").inner_text()  # its log says how it ended
    page.goto(f"{dashboard_url}/s/lighthouse")
    earlier = store.current_take("lighthouse", "lighthouse-wide").number
    card = page.locator('.card[data-shot="lighthouse-wide"] [data-status]')
    assert card.inner_text() == f"stale: its rerender was stopped; take {earlier} still plays", card.inner_text()


def test_milimo_stop_stops_one_take_from_a_terminal(rendered):
    """`milimo stop` asks the shot's rendering take to stop, as the dashboard's Stop does; a shot with nothing
    rendering is told so (exit 2), nothing changed."""
    proc, take = _long_rerender(rendered, "Cy")
    where = ["--db", rendered["db"], "--out", rendered["out"]]
    idle = milimo("stop", rendered["board"], "harbour", *where, "--by", "Bo")
    assert idle.returncode == 2 and "harbour has no take rendering" in idle.stderr, idle.stderr
    assert "Traceback" not in idle.stderr and len(idle.stderr.strip().splitlines()) == 1
    asked = milimo("stop", rendered["board"], "lighthouse-wide", *where, "--by", "Bo")
    assert asked.returncode == 0, asked.stderr
    assert f"lighthouse-wide take {take.number}: asked to stop at its next step by Bo" in asked.stdout
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped: lighthouse-wide: Bo asked it to stop" in out, (out, err[-2000:])
    stopped = Store.open(rendered["db"]).take(take.id)
    assert (stopped.status, stopped.cancel_requested_by) == ("cancelled", "Bo")
    again = milimo("stop", rendered["board"], "lighthouse-wide", str(take.number), *where)
    assert again.returncode == 2 and f"take {take.number} of lighthouse-wide is cancelled" in again.stderr


def test_cancel_asks_first_then_stops_the_storyboards_renders(rendered):
    """Last in this file: it leaves lighthouse-wide with a cancelled take and a stored steps override."""
    proc, take = _long_rerender(rendered, "Cy")
    store = Store.open(rendered["db"])
    client = _client(rendered)
    client.cookies.set("milimo_user", "Ada")
    page = client.get("/s/lighthouse")
    assert "rendering (stage1 step" in page.text
    asked = client.get("/s/lighthouse/cancel")
    assert asked.status_code == 200 and f"lighthouse-wide take {take.number}: stage1 step" in asked.text
    origin = {"Origin": "http://127.0.0.1:8765"}
    csrf = client.cookies.get("milimo_csrf")
    unconfirmed = client.post("/s/lighthouse/cancel", data={"csrf": csrf}, headers=origin, follow_redirects=False)
    assert unconfirmed.status_code == 303 and unconfirmed.headers["location"] == "/s/lighthouse/cancel"
    assert store.take(take.id).status == "running"
    answer = client.post("/s/lighthouse/cancel", data={"csrf": csrf, "confirm": "yes"}, headers=origin,
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/s/lighthouse"
    assert "Ada asked 1 render(s) to stop" in client.get("/s/lighthouse").text
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    cancelled = store.takes("lighthouse", "lighthouse-wide")[-1]
    assert cancelled.status == "cancelled" and (cancelled.error or "").startswith("cancelled by Ada: interrupted")
