"""DirectorPanel in real headless Chromium against the real stack (`tower api` serving the built
panel, the seven agents, Kafka, PostgreSQL): no mocked API. A person writes the seed's scene,
watches every shot complete with scores, rates one and sees its pattern row change; the same at
phone width; the scene's film plays and seeks, the memory finds the scene's attempts by a word of
it and each shot's similar shots, and a shot regenerated on a note is cut into it; and axe-core
finds no critical accessibility violation."""

from __future__ import annotations

import asyncio
import re
import time

from playwright.async_api import expect

from agents.registry import STAGE_NAMES
from tests.browser.conftest import AXE, SCREENSHOTS
from tests.integration.test_pipeline import kai_shot_count

KAI = "Create a scene where Kai fights the dragon"
SCENE_S = 120_000  # ms: a scene takes ~10-20 s here; the bound is for a loaded machine
FINAL = 'article.shot[data-state="accepted"], article.shot[data-state="kept"]'
SHOTS = kai_shot_count()  # how many shots the planner gives KAI (with characters Kai, Dragon)


async def open_panel(page, api_server, session: str) -> None:  # noqa: ANN001
    response = await page.goto(api_server.url + "/")
    assert response.status == 200 and "text/html" in response.headers["content-type"]
    await expect(page.get_by_role("heading", name="DirectorPanel", level=1)).to_be_visible()
    await page.get_by_label("API token").fill(api_server.token)
    await page.get_by_label("Session ID").fill(session)
    await page.get_by_label("Session ID").press("Tab")


async def start_scene(page, *, keyboard: bool = False) -> None:  # noqa: ANN001
    await page.get_by_label("Scene description").fill(KAI)
    await page.get_by_label("Characters").fill("Kai, Dragon")
    await page.get_by_label("Quality threshold").fill("0.6")
    if keyboard:  # Enter in a field submits the form
        await page.get_by_label("Max attempts").press("Enter")
    else:
        await page.get_by_role("button", name="Start scene").tap()
    await expect(page.get_by_test_id("error")).to_have_count(0)


async def wait_scene_complete(page, workers, shots: int = SHOTS) -> None:  # noqa: ANN001
    cards = page.locator("article.shot")
    await workers.watch(expect(cards).to_have_count(shots, timeout=60_000))
    await workers.watch(expect(page.locator(FINAL)).to_have_count(shots, timeout=SCENE_S))
    await expect(page.get_by_test_id("scene-status")).to_contain_text(re.compile(rf"complete.*{shots}/{shots} shots final"),
                                                                      timeout=30_000)


async def axe_violations(page) -> list[dict]:  # noqa: ANN001
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"][:3]]}
            for v in result["violations"]]


async def settled_scene(api_server, scene_id: str, timeout_s: float = 30) -> dict:  # noqa: ANN001
    """The scene once the learner has projected it as finished (every shot's accepted attempt)."""
    deadline = time.monotonic() + timeout_s
    async with api_server.client() as client:
        while True:
            response = await client.get(f"/api/director/scenes/{scene_id}")
            scene = response.json()
            if response.status_code == 200 and scene["scene"]["status"] in {"complete", "needs_review"} \
                    and all(s["accepted_attempt"] is not None for s in scene["shots"]):
                return scene
            assert time.monotonic() < deadline, f"scene {scene_id} not projected as finished: {scene}"[:2000]
            await asyncio.sleep(0.2)


async def pattern_row(api_server, context: str, modifier: str) -> dict | None:  # noqa: ANN001
    async with api_server.client() as client:
        rows = (await client.get("/api/director/patterns")).json()["patterns"]
    return next((r for r in rows if r["context"] == context and r["modifier"] == modifier), None)


async def test_panel_runs_the_seed_scene_and_learns_a_rating(api_server, workers, new_page, tmp_path):
    started = time.monotonic()
    workers.start(*STAGE_NAMES)
    page = await new_page(1280, 800)
    await open_panel(page, api_server, "browser-desktop")
    await start_scene(page, keyboard=True)

    # Live: one card per planned shot, each moving through the stages to a final verdict with scores.
    await wait_scene_complete(page, workers)
    # The new session and scene were read while the learner projected them: no 404 in the console.
    assert not page.errors, page.errors
    states = await page.evaluate("window.__shotStates")
    progress = await page.evaluate("window.__progress")
    assert sorted(states, key=int) == [str(n) for n in range(1, SHOTS + 1)], states
    for shot, seen in states.items():
        assert seen[-1] in {"accepted", "kept"}, (shot, seen)
        assert {"planned", "refined", "rendering", "rendered"} & set(seen), (shot, seen)
    seen_anywhere = {state for seen in states.values() for state in seen}
    assert "rendering" in seen_anywhere, states
    assert any(0 < v < 100 for values in progress.values() for v in values), progress  # the bar moved

    # What the panel shows matches the API's projection of the scene, attempt by attempt.
    scene_id = re.search(r"scene=([^&]+)", page.url).group(1)
    scene = await settled_scene(api_server, scene_id)
    for shot in scene["shots"]:
        card = page.locator(f'article.shot[data-shot="{shot["shot_number"]}"]')
        attempts = card.locator("li.attempt")
        await expect(attempts).to_have_count(len(shot["attempts"]))
        for attempt in shot["attempts"]:
            row = card.locator(f'li.attempt[data-attempt="{attempt["attempt"]}"]')
            await expect(row.get_by_test_id("attempt-score")).to_contain_text(f'{attempt["score"]["composite"]:.2f}')
            await expect(row.locator(".filmstrip img")).to_have_count(len(attempt["frames"]))
            if attempt["attempt"] > 1:
                await expect(row).to_contain_text("Retried because")
        await expect(card.get_by_test_id("verdict")).to_contain_text(f"attempt {shot['accepted_attempt']}")

    # Frames load and the preview plays: the shown frame changes by itself.
    preview = page.locator('article.shot[data-shot="1"] img[data-testid="preview-frame"]')
    await expect(preview).to_be_visible()
    await page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=await preview.element_handle(), timeout=10_000)
    first = await preview.get_attribute("src")
    await page.wait_for_function("([img, src]) => img.getAttribute('src') !== src",
                                 arg=[await preview.element_handle(), first], timeout=10_000)

    # Rate shot 1: its accepted attempt's pattern row gains a human observation, in the table.
    shot1 = scene["shots"][0]
    accepted = next(a for a in shot1["attempts"] if a["attempt"] == shot1["accepted_attempt"])
    # No row yet when the accepted attempt is a retry whose modifier no first attempt used
    # (only first attempts are credited): the rating then starts it from the Beta(1, 1) prior.
    before = await pattern_row(api_server, accepted["context"], accepted["modifier"])
    row = page.locator(f'tr[data-context="{accepted["context"]}"][data-modifier="{accepted["modifier"]}"]')
    if before is None:
        before = {"observations": 0, "mean": 0.5}
        await expect(row).to_have_count(0)
    else:
        await expect(row).to_have_attribute("data-observations", str(before["observations"]))
    card = page.locator('article.shot[data-shot="1"]')
    # By keyboard: focus the rating, arrow to 2, tab to the note, tab to the button, Enter.
    await card.get_by_role("radio", name=re.compile(r"^1\b")).focus()
    await page.keyboard.press("Space")
    await page.keyboard.press("ArrowRight")
    await expect(card.get_by_role("radio", name=re.compile(r"^2\b"))).to_be_checked()
    await page.keyboard.press("Tab")
    await expect(card.get_by_label("Note")).to_be_focused()
    await page.keyboard.type("the dragon is off-model")
    await page.keyboard.press("Tab")
    await expect(card.get_by_role("button", name="Rate shot 1")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(card.locator(".rate-status")).to_contain_text("Learned", timeout=30_000)
    await expect(row).to_have_attribute("data-observations", str(before["observations"] + 1))
    await expect(row).to_have_class(re.compile(r"\bchanged\b"))
    await expect(page.get_by_test_id("pattern-change")).to_contain_text(accepted["modifier"])
    after = await pattern_row(api_server, accepted["context"], accepted["modifier"])
    assert after["sources"].get("human") == 1 and after["mean"] < before["mean"]
    await expect(row.locator('[data-col="mean"]')).to_have_text(f'{after["mean"]:.3f}')

    # The trend chart and the session history show the scene.
    await expect(page.get_by_test_id("trend-chart")).to_contain_text("mean score")
    history = page.get_by_test_id("session-history")
    await expect(history).to_contain_text(KAI)
    passed = scene["scene"]["passed_shots"]
    await expect(history).to_contain_text(f"{SHOTS}/{SHOTS} passed" if passed == SHOTS else f"/{SHOTS} passed")

    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"page is {width}px wide at 1280px"
    violations = await axe_violations(page)
    assert not [v for v in violations if v["impact"] == "critical"], violations
    assert not [v for v in violations if v["impact"] == "serious"], violations

    shots = SCREENSHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(shots / "panel-desktop.png"), full_page=True)

    # Reloaded (the scene is in the URL), the panel reads the finished scene back from the API.
    await page.reload()
    await expect(page.locator(FINAL)).to_have_count(SHOTS)
    await expect(page.get_by_test_id("scene-status")).to_contain_text(f"{SHOTS}/{SHOTS} shots final")
    await expect(page.locator('article.shot[data-shot="1"] .rate-status')).to_have_text("")
    assert not page.errors, page.errors
    assert time.monotonic() - started < 90, f"took {time.monotonic() - started:.0f}s"


async def test_panel_at_phone_width(api_server, workers, new_page, tmp_path):
    workers.start(*STAGE_NAMES)
    page = await new_page(390, 844, is_mobile=True, has_touch=True, device_scale_factor=2)
    await open_panel(page, api_server, "browser-phone")

    # The form fits the screen: every control visible, inside the width, big enough to tap.
    for label in ("Scene description", "Characters", "Style", "Quality threshold", "Max attempts"):
        box = await page.get_by_label(label).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (label, box)
    start = page.get_by_role("button", name="Start scene")
    box = await start.bounding_box()
    assert box["height"] >= 40 and box["width"] >= 300, box
    await start_scene(page)
    await wait_scene_complete(page, workers)
    # The scene's film plays and seeks on the phone, and with its storyboard fits its width.
    await film_plays(page, api_server, re.search(r"scene=([^&]+)", page.url).group(1))
    await expect(page.get_by_test_id("storyboard")).to_be_visible(timeout=60_000)
    await page.get_by_test_id("storyboard").scroll_into_view_if_needed()  # it loads lazily
    await page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                 arg=await page.get_by_test_id("storyboard").element_handle(), timeout=10_000)
    for part in ("scene-video", "storyboard"):
        box = await page.get_by_test_id(part).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (part, box)

    # No sideways scrolling; shot cards stacked, full width, with their rating controls usable by touch.
    width = await page.evaluate("document.documentElement.scrollWidth")
    wide = await page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > 391)
        .map((e) => `${e.tagName.toLowerCase()}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)
        .slice(0, 8)""")
    assert width <= 390, f"page is {width}px wide at 390px: {wide}"
    cards = page.locator("article.shot")
    boxes = [await cards.nth(i).bounding_box() for i in range(SHOTS)]
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 and b["width"] >= 320 for b in boxes), boxes
    assert [b["y"] for b in boxes] == sorted(b["y"] for b in boxes) and len({b["y"] for b in boxes}) == SHOTS, boxes
    card = cards.nth(1)
    await card.scroll_into_view_if_needed()
    radio = card.get_by_role("radio", name=re.compile(r"^4\b"))
    star = card.locator("label.star").nth(3)
    star_box = await star.bounding_box()
    assert star_box["width"] >= 40 and star_box["height"] >= 40, star_box
    await star.tap()
    await expect(radio).to_be_checked()
    await card.get_by_role("button", name="Rate shot 2").tap()
    await expect(card.locator(".rate-status")).to_contain_text("Learned", timeout=30_000)

    violations = await axe_violations(page)
    assert not [v for v in violations if v["impact"] in {"critical", "serious"}], violations

    # The top of the page: the form, the scene's progress and the first shot card.
    shots = SCREENSHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    top = await page.locator('article.shot[data-shot="1"] .attempts').bounding_box()
    await page.screenshot(path=str(shots / "panel-phone.png"), full_page=True,
                          clip={"x": 0, "y": 0, "width": 390, "height": top["y"] + 40})
    assert not page.errors, page.errors


async def film_plays(page, api_server, scene_id: str) -> dict:  # noqa: ANN001
    """The scene's film in the panel: the video has the plan's length, seeks to a shot from the
    cut bar and plays from there. Returns the API's assembly of the scene."""
    video = page.get_by_test_id("scene-video")
    await expect(video).to_be_visible(timeout=60_000)
    async with api_server.client() as client:
        assembly = (await client.get(f"/api/director/scenes/{scene_id}")).json()["assembly"]
    handle = await video.element_handle()
    await page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=handle, timeout=20_000)
    duration = await page.evaluate("v => v.duration", handle)
    assert abs(duration - assembly["duration_s"]) <= 1 / assembly["fps"] + 0.05, (duration, assembly["duration_s"])
    segments = page.locator(".cut-bar .cut-segment")
    await expect(segments).to_have_count(SHOTS)
    await segments.nth(2).click()  # play from shot 3
    start = assembly["shots"][2]["start_frame"] / assembly["fps"]
    await page.wait_for_function("([v, t]) => !v.seeking && Math.abs(v.currentTime - t) < 0.2", arg=[handle, start],
                                 timeout=10_000)
    await page.evaluate("v => v.play()", handle)
    await page.wait_for_function("([v, t]) => v.currentTime > t + 0.2", arg=[handle, start], timeout=10_000)
    await page.evaluate("v => v.pause()", handle)
    return assembly


async def remembered(api_server, scene_id: str, word: str, timeout_s: float = 30) -> None:  # noqa: ANN001
    """Wait until the memory holds every scored attempt of the finished scene: the learner
    remembers an attempt just after projecting its score."""
    scene = await settled_scene(api_server, scene_id)
    scored = {(s["shot_number"], a["attempt"]) for s in scene["shots"] for a in s["attempts"] if a["score"]}
    deadline = time.monotonic() + timeout_s
    async with api_server.client() as client:
        while True:
            response = await client.get("/api/director/memory/search", params={"q": word, "limit": 100})
            found = response.json()
            if response.status_code == 200:
                seen = {(h["shot_number"], h["attempt"]) for h in found["hits"] if h["scene_id"] == scene_id}
                if seen >= scored:
                    return
            assert time.monotonic() < deadline, f"the memory lacks attempts {sorted(scored)} of {scene_id}: {found}"[:2000]
            await asyncio.sleep(0.2)


async def memory_finds_the_scene(page, api_server, scene_id: str, tmp_path) -> None:  # noqa: ANN001
    """The Memory search finds the scene's attempts by a word of its description; a shot card's
    "Similar shots" lists the scene's other shots (this test's database remembers this scene only)."""
    assert SHOTS >= 2, "the seed scene needs two shots for a shot to have similar ones"
    word = "dragon"
    await remembered(api_server, scene_id, word)
    async with api_server.client() as client:
        searched = (await client.get("/api/director/memory/search", params={"q": word, "limit": 10})).json()
        similar = (await client.get(f"/api/director/memory/similar/{scene_id}/1", params={"limit": 10})).json()
        looks = (await client.get(f"/api/director/memory/similar/{scene_id}/1",
                                  params={"limit": 10, "by": "look"})).json()

    memory = page.get_by_role("region", name="Memory", exact=True)
    query = memory.get_by_label("Search the memory")
    await query.fill(word)
    await query.press("Enter")  # Enter submits
    await expect(memory.get_by_test_id("memory-status")).to_contain_text(f"like “{word}”")
    hits = memory.locator("li.memory-hit")
    await expect(memory.locator(f'li.memory-hit[data-scene="{scene_id}"]').first).to_be_visible()
    shown = [h for h in searched["hits"] if h["similarity"] > 0]
    await expect(hits).to_have_count(len(shown))
    top = shown[0]
    first = hits.first
    await expect(first).to_contain_text(f'scene {scene_id} · shot {top["shot_number"]} · attempt {top["attempt"]}')
    await expect(first.get_by_test_id("memory-similarity")).to_have_text(f'similarity {top["similarity"]:.2f}')
    await expect(first.get_by_test_id("memory-score")).to_have_text(f'score {top["composite"]:.2f}')
    await expect(first.get_by_test_id("memory-verdict")).to_have_text("passed" if top["passed"] else re.compile("failed"))
    if top["frame_url"]:
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                     arg=await first.locator("img").element_handle(), timeout=10_000)

    # Shot 1's similar shots: the scene's other shots, as the API ranks them.
    card = page.locator('article.shot[data-shot="1"]')
    button = card.get_by_role("button", name="Similar shots to shot 1")
    await button.click()
    await expect(button).to_have_attribute("aria-expanded", "true")
    alike = [h for h in similar["hits"] if h["similarity"] > 0]
    found = card.locator("li.memory-hit")
    if alike:
        await expect(card.get_by_test_id("similar-status")).to_contain_text("like shot 1")
        await expect(found).to_have_count(len(alike))
        assert {await found.nth(i).get_attribute("data-scene") for i in range(len(alike))} == {scene_id}
        assert "1" not in {await found.nth(i).get_attribute("data-shot") for i in range(len(alike))}
        await expect(found.first).to_have_attribute("data-shot", str(alike[0]["shot_number"]))
        # A hit of this scene goes to its shot card.
        other = alike[0]["shot_number"]
        await found.first.get_by_role("button", name=f"Go to shot {other}").click()
        await expect(page.locator(f'article.shot[data-shot="{other}"] h3')).to_be_focused()
    else:
        await expect(card.get_by_test_id("similar-status")).to_contain_text("Nothing remembered like that yet")

    # By look: the same shots ranked by their middle frames' image signatures, as the API ranks them.
    await card.get_by_test_id("similar-by").select_option("look")
    by_look = [h for h in looks["hits"] if h["similarity"] > 0]
    if by_look:
        await expect(card.get_by_test_id("similar-status")).to_contain_text("like shot 1 by look")
        await expect(found).to_have_count(len(by_look))
        await expect(found.first).to_have_attribute("data-shot", str(by_look[0]["shot_number"]))
    else:
        await expect(card.get_by_test_id("similar-status")).to_contain_text("Nothing remembered like that yet")

    violations = await axe_violations(page)
    assert not [v for v in violations if v["impact"] in {"critical", "serious"}], violations
    shots = SCREENSHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    # From the shots' heading down to the end of the search's hits or of shot 1's similar shots.
    await page.evaluate("window.scrollTo(0, 0)")
    top = (await page.locator("#shots-title").bounding_box())["y"] - 12
    bottom = max((await memory.bounding_box())["y"] + (await memory.bounding_box())["height"],
                 (await card.bounding_box())["y"] + (await card.bounding_box())["height"])
    await page.screenshot(path=str(shots / "panel-memory.png"), full_page=True,
                          clip={"x": 0, "y": top, "width": 1280, "height": bottom - top + 12})


async def test_panel_plays_the_scene_film_searches_the_memory_and_regenerates_one_shot(api_server, workers, new_page, tmp_path):
    workers.start(*STAGE_NAMES)
    page = await new_page(1280, 800)
    await open_panel(page, api_server, "browser-film")
    await start_scene(page, keyboard=True)
    await wait_scene_complete(page, workers)
    scene_id = re.search(r"scene=([^&]+)", page.url).group(1)

    video = page.get_by_test_id("scene-video")
    assembly = await film_plays(page, api_server, scene_id)
    board = page.get_by_test_id("storyboard")
    await board.scroll_into_view_if_needed()  # it loads lazily
    await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=await board.element_handle(),
                                 timeout=10_000)
    for name in ("Download video", "Download storyboard", "Download timeline (OTIO)"):
        await expect(page.get_by_role("link", name=name)).to_have_attribute("href", re.compile(rf"/scenes/{scene_id}/"))
    breaks = [c["after_shot"] for c in assembly["cuts"] if c["discontinuity"]]
    await expect(page.locator(".cut-bar li.cut-break")).to_have_count(len(breaks))
    shots = SCREENSHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    await page.get_by_test_id("scene-film").screenshot(path=str(shots / "panel-film.png"))
    async with api_server.client() as client:
        (shots / "scene-storyboard.png").write_bytes((await client.get(assembly["storyboard"]["url"])).content)

    await memory_finds_the_scene(page, api_server, scene_id, tmp_path)

    # Regenerate shot 2 with a note: a new attempt of that shot only, and the film is cut again.
    card = page.locator('article.shot[data-shot="2"]')
    await card.get_by_text("Regenerate shot 2").click()
    await card.get_by_test_id("regenerate-note").fill("the dragon closer")
    await card.get_by_test_id("regenerate").click()
    status = card.get_by_test_id("regenerate-status")
    await expect(status).to_contain_text("is in the film now", timeout=90_000)
    attempt = int(re.search(r"Attempt (\d+) is in the film", await status.inner_text()).group(1))
    async with api_server.client() as client:
        after = (await client.get(f"/api/director/scenes/{scene_id}")).json()
    assert after["assembly"]["video"]["sha256"] != assembly["video"]["sha256"]
    assert [s["attempt"] for s in after["assembly"]["shots"]] == \
        [attempt if s["shot_number"] == 2 else s["attempt"] for s in assembly["shots"]]
    await expect(card.locator(f'li.attempt[data-attempt="{attempt}"]')).to_contain_text("directed")
    await expect(video).to_have_attribute("src", after["assembly"]["video"]["url"])
    assert not page.errors, page.errors
