import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from director.planner import (
    MAX_BEATS,
    MAX_SHOTS,
    ScenePlan,
    duration_step,
    plan_scene,
    scene_text,
    snap_duration,
)
from events.models import SceneRequested, ShotPlanned

REPO = Path(__file__).resolve().parents[2]


def plan(description: str, characters: list[str] | None = None, *, fps: int = 4, **fields) -> ScenePlan:
    request = SceneRequested(scene_id="s", session_id="x", description=description, characters=characters or [],
                             **fields)
    return plan_scene(request, fps=fps)


def in_frame(plan_: ScenePlan) -> set[str]:
    return {c for s in plan_.shots for c in s.characters}


def assert_well_formed(plan_: ScenePlan, fps: int = 4) -> None:
    n = len(plan_.shots)
    assert 1 <= n <= MAX_SHOTS
    assert [s.shot_number for s in plan_.shots] == list(range(1, n + 1))
    assert all(s.shot_count == n for s in plan_.shots)
    for s in plan_.shots:
        assert s.duration >= 1.0 and (s.duration / duration_step(fps)).is_integer(), s.duration
        assert s.frame_count == s.duration * fps and s.fps == fps
        assert 0.0 <= s.expected_motion <= 1.0 and s.continuity_notes and s.mood and s.lighting and s.action
    assert set(plan_.characters) <= in_frame(plan_), "every character is in at least one shot"


# --- kinds of scene -------------------------------------------------------------------------------

def test_kai_fights_the_dragon_is_covered_wide_medium_close_with_impact_and_reaction(kai_request):
    result = plan_scene(kai_request, fps=4)
    assert_well_formed(result)
    assert 4 <= len(result.shots) <= 6
    assert (result.overall_mood, result.genre, result.lighting_suggestions) == ("intense", "action", "dramatic shadows")
    angles = [s.camera_angle for s in result.shots]
    assert angles[0] == "wide" and result.shots[0].action.startswith("Establishing")
    assert angles.index("wide") < angles.index("medium") < angles.index("close-up")
    impact = next(s for s in result.shots if s.action.startswith("Impact"))
    assert impact.expected_motion == 1.0 and set(impact.characters) == {"Kai", "Dragon"}
    assert impact.shot_number < result.shots[-1].shot_number
    reaction = result.shots[-1]
    assert reaction.camera_angle == "close-up" and reaction.characters == ["Dragon"] and "reels" in reaction.action
    assert result.shots[0].expected_motion <= 0.25
    assert all(set(s.characters) <= {"Kai", "Dragon"} and s.characters for s in result.shots)
    assert result.detected_characters == ()


def test_dialogue_gets_a_two_shot_shot_reverse_shot_and_a_reaction():
    result = plan("Mira confesses to Ren at the station")
    assert_well_formed(result)
    angles = [s.camera_angle for s in result.shots]
    assert angles[:2] == ["wide", "two-shot"] and angles.count("over-the-shoulder") == 2
    shot, reverse = [s for s in result.shots if s.camera_angle == "over-the-shoulder"]
    assert "on Mira" in shot.action and "on Ren" in reverse.action, (shot.action, reverse.action)
    assert result.shots[-1].camera_angle == "close-up" and result.shots[-1].characters == ["Ren"]
    assert all(s.expected_motion <= 0.2 for s in result.shots)
    assert result.genre == "emotional" and result.overall_mood == "tender"
    assert all("place: the station" in s.continuity_notes for s in result.shots)


def test_a_quote_is_dialogue_and_its_commas_do_not_split_the_beat():
    result = plan('Kai says "Run, now, before it wakes!" to Mira', ["Kai", "Mira"])
    assert len(result.beats) == 1 and result.beats[0].kind == "dialogue"
    assert any('"Run, now, before it wakes!"' in s.action for s in result.shots)


def test_a_reveal_is_a_slow_push_in():
    result = plan("Kai discovers a hidden door in the ruins. Then a ghost appears.")
    assert_well_formed(result)
    assert [b.kind for b in result.beats] == ["reveal", "reveal"]
    push_ins = [s for s in result.shots if s.camera_movement == "slow push-in" and s.action.startswith("Reveal")]
    assert len(push_ins) == 2
    assert "hidden door" in push_ins[0].action and push_ins[1].characters == ["Ghost"]
    noticing = next(s for s in result.shots if "noticing" in s.action)
    assert noticing.shot_number < push_ins[0].shot_number and noticing.camera_angle == "close-up"
    assert "Ghost" in result.detected_characters and result.genre == "mystery"


def test_a_chase_is_tracking_with_a_pov_and_keeps_screen_direction():
    result = plan("The dragon chases Kai across the rooftops")
    assert_well_formed(result)
    tracking = [s for s in result.shots if s.camera_movement == "tracking"]
    pov = [s for s in result.shots if s.camera_angle == "pov"]
    assert tracking and pov and all(s.expected_motion >= 0.8 for s in tracking + pov)
    assert pov[0].action.startswith("The dragon's POV") and pov[0].characters == ["Kai"]
    assert all("left to right" in s.continuity_notes for s in tracking + pov)
    # The pursuer stays behind: Kai (screen-right) chasing the dragon (screen-left) runs right to left.
    reverse = plan("The dragon sleeps on the rooftops. Kai chases the dragon.")
    chase = next(s for s in reverse.shots if s.camera_movement == "tracking")
    assert "Dragon screen-left" in reverse.shots[0].continuity_notes and "right to left" in chase.continuity_notes
    assert result.overall_mood == "frantic" and result.genre == "action"


def test_a_calm_scene_is_slow_and_carries_time_and_place_from_the_text():
    result = plan("Kai sits by the river at dusk")
    assert_well_formed(result)
    assert max(s.expected_motion for s in result.shots) <= 0.25
    assert {s.camera_angle for s in result.shots} == {"wide", "medium", "close-up"}
    assert all("time: dusk" in s.continuity_notes and "place: the river" in s.continuity_notes for s in result.shots)
    assert result.shots[0].action == "Establishing: Kai by the river"
    assert {s.lighting for s in result.shots} == {"golden hour"} and result.overall_mood == "serene"
    assert not any("assumed" in note for note in result.notes)


def test_a_mixed_scene_goes_from_calm_to_intense_beat_by_beat():
    result = plan("Kai rests in the ruins at night. Suddenly the dragon attacks him, then Kai flees into the forest.")
    assert_well_formed(result)
    assert [b.kind for b in result.beats] == ["calm", "action", "chase"]
    assert [b.place for b in result.beats] == ["the ruins", "the ruins", "the forest"]
    moods = [s.mood for s in result.shots]
    assert moods[1] == "serene" and "intense" in moods and moods[-1] == "frantic"
    assert result.overall_mood == "intense" and result.genre == "action"
    assert result.shots[1].lighting == "low-key moonlight"
    assert any(s.lighting == "dramatic shadows" for s in result.shots)
    assert result.lighting_suggestions == "low-key moonlight → dramatic shadows (night)"
    # Shots follow the story: every shot of a beat comes before the shots of the next.
    beat_of = [int(s.description.split()[1].split("/")[0]) for s in result.shots]
    assert beat_of == sorted(beat_of)
    # The new place is re-established, and the time carries over.
    new_place = next(s for s in result.shots if "place: the forest" in s.continuity_notes)
    assert new_place.camera_angle == "wide" and "new place" in new_place.continuity_notes
    assert all("time: night" in s.continuity_notes for s in result.shots)
    # The dragon attacks *him*: Kai is in the action.
    assert result.beats[1].characters == ("Dragon", "Kai")


@pytest.mark.parametrize(("description", "kinds"), [
    ("Kai collapses after the dragon strikes him", ["action", "calm"]),  # "A after B" plays B first
    ("Kai waits while Mira searches the ruins", ["calm", "calm"]),
    ("The dragon roars as Kai draws his sword", ["calm", "calm"]),
    ("Kai dodges, strikes the dragon and runs", ["action", "action", "chase"]),
    ("Kai talks to Mira and then runs", ["dialogue", "chase"]),
    ("After the battle, Kai rests", ["calm"]),  # "the battle" is over: not an action beat
    ("Kai runs as fast as he can", ["chase"]),
])
def test_beats_split_on_then_while_as_after_and_commas(description, kinds):
    assert [b.kind for b in plan(description).beats] == kinds


# --- characters -----------------------------------------------------------------------------------

def test_characters_named_in_the_text_are_detected_reported_and_shown():
    result = plan("Suddenly the dragon attacks Kai in Tokyo. Later Mira arrives with Captain Aro.", ["Kai"])
    assert result.detected_characters == ("Dragon", "Mira", "Captain Aro")
    assert any("Dragon, Mira, Captain Aro" in note for note in result.notes)
    assert {"Kai", "Dragon", "Mira", "Captain Aro"} <= in_frame(result)
    assert not {"Suddenly", "Later", "Tokyo"} & in_frame(result)
    assert "place: Tokyo" in result.shots[0].continuity_notes


@pytest.mark.parametrize(("description", "actor", "action"), [
    ("Create a scene where Kai fights the dragon, then draws his sword", "Kai", "Kai draws his sword"),
    ("Mira opens the gate, then picks up the lantern", "Mira", "Mira picks up the lantern"),
    ("Kai fought the dragon, then pulled out a dagger", "Kai", "Kai pulled out a dagger"),
])
def test_a_clause_without_its_subject_keeps_the_one_before(description, actor, action):
    result = plan(description)
    shot = next(s for s in result.shots if s.action == action)
    assert shot.characters[0] == actor


def test_a_clause_that_starts_with_its_own_subject_does_not_inherit_one():
    result = plan("Kai walks into the hall, then the storm breaks over the city")
    storm = next(s for s in result.shots if s.action == "The storm breaks over the city")
    assert storm.characters == []


def test_sentence_starters_and_common_words_are_not_characters():
    result = plan("Slowly the rain falls. Night comes. Running feet echo in the hall. Kai waits. Kai sleeps. "
                  "Silence. Birds sing, and silence returns.")
    assert result.characters == ("Kai",) and result.detected_characters == ("Kai",)


def test_every_requested_character_appears_even_if_the_text_never_names_them():
    result = plan("Kai fights the dragon", ["Kai", "Dragon", "Sora"])
    assert_well_formed(result)
    assert "Sora" in result.shots[0].characters and "Sora" in result.shots[0].action
    assert any("Sora" in note for note in result.notes)


def test_the_180_degree_line_is_kept_in_every_shot(kai_request):
    result = plan_scene(kai_request, fps=4)
    for shot in result.shots:
        if "Kai" in shot.characters:
            assert "Kai screen-left facing right" in shot.continuity_notes
        if "Dragon" in shot.characters:
            assert "Dragon screen-right facing left" in shot.continuity_notes
    assert result.shots[0].continuity_notes.startswith("sets the 180° line")


# --- timing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fps", [4, 5, 24])
@pytest.mark.parametrize("target", [3.0, 9.3, 20.0, 45.0])
def test_a_target_length_is_met_on_the_render_grid(kai_request, fps, target):
    result = plan_scene(kai_request.model_copy(update={"target_duration_s": target}), fps=fps)
    assert_well_formed(result, fps)
    assert abs(result.duration - target) <= 0.5, [s.duration for s in result.shots]
    assert any(s.expected_motion >= 0.8 for s in result.shots), "even a short fight keeps its action shot"
    assert result.target_duration_s == target


def test_a_longer_target_gets_more_coverage_and_a_short_one_less(kai_request):
    default = plan_scene(kai_request, fps=4)
    short = plan_scene(kai_request.model_copy(update={"target_duration_s": 3.0}), fps=4)
    long = plan_scene(kai_request.model_copy(update={"target_duration_s": 60.0}), fps=4)
    assert len(short.shots) < len(default.shots) < len(long.shots) <= MAX_SHOTS
    assert max(s.duration for s in long.shots) <= 15


def test_an_unreachable_target_is_noted(kai_request):
    result = plan_scene(kai_request.model_copy(update={"target_duration_s": 300.0}), fps=60)  # 600 frames a shot
    assert any("cannot be met" in note for note in result.notes)
    assert all(s.frame_count <= 600 for s in result.shots)


def test_durations_snap_to_the_render_grid():
    assert snap_duration(2.2, 4) == (2.0, 8)
    assert snap_duration(0.1, 8) == (1.0, 8)  # at least a second
    assert snap_duration(2.2, 5) == (2.0, 10)  # odd fps: whole seconds, so whole frames
    assert snap_duration(1.5, 5) == (2.0, 10)
    assert snap_duration(0.1, 1) == (2.0, 2)  # at least two frames, so there is a pair to score
    assert snap_duration(90, 24) == (25.0, 600)  # at most 600 frames


# --- robustness -----------------------------------------------------------------------------------

def test_planning_is_deterministic(kai_request):
    assert plan_scene(kai_request, fps=4) == plan_scene(kai_request, fps=4)


def test_planning_does_not_depend_on_hash_seeds():
    code = ("import json; from director.planner import plan_scene; from events.models import SceneRequested; "
            "r = SceneRequested(scene_id='s', session_id='x', description='Kai says \"go\" to Mira, then the dragon "
            "attacks while Ren hides in the ruins at night', characters=['Sora']); p = plan_scene(r, fps=4); "
            "print(json.dumps([[s.model_dump() for s in p.shots], p.notes]))")
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                       env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}).stdout
        for seed in ("0", "1", "4242")
    }
    assert len(outputs) == 1 and json.loads(outputs.pop())[0]


def test_a_long_description_is_capped_with_a_note():
    sentence = "Kai strikes the dragon, then Mira tells Ren the plan while the wolves chase Sora. "
    result = plan(sentence * 12)
    assert_well_formed(result)
    assert len(result.beats) == MAX_BEATS and len(result.shots) == MAX_SHOTS
    assert any(f"covers the first {MAX_BEATS}" in note for note in result.notes)


@pytest.mark.parametrize("description", [
    "カイがドラゴンと戦う",
    "Kai se bat contre le dragon dans les ruines",
    "Kai lucha contra el dragón en las ruinas",
])
def test_non_english_text_gets_a_generic_plan(description):
    result = plan(description, ["Kai", "Dragon"])
    assert_well_formed(result)
    assert any("does not look like English" in note for note in result.notes)
    assert {"Kai", "Dragon"} <= in_frame(result)
    assert any(s.expected_motion >= 0.8 for s in result.shots), "a fight, in any of these languages"


def test_non_english_text_without_characters_still_plans():
    result = plan("夜の街。静かな雨。")
    assert_well_formed(result)
    assert result.characters == () and result.shots[0].camera_angle == "wide"


def test_a_blank_description_is_refused():
    with pytest.raises(ValidationError):
        SceneRequested(scene_id="s", session_id="x", description="   ")
    unchecked = SceneRequested.model_construct(scene_id="s", session_id="x", description=" \n\t", characters=[])
    with pytest.raises(ValueError, match="blank"):
        plan_scene(unchecked, fps=4)


def test_scene_text_drops_the_lead_in():
    assert scene_text("Create a scene where Kai fights the dragon") == "Kai fights the dragon"
    assert scene_text("Create a scene") == "Create a scene"


def test_old_messages_stay_valid_and_new_fields_are_optional(kai_shots):
    request = SceneRequested.model_validate_json('{"scene_id": "a", "session_id": "b", "description": "Kai rests"}')
    assert request.target_duration_s is None
    legacy = kai_shots[0].model_dump(mode="json", exclude={"plan_notes"})
    assert ShotPlanned.model_validate(legacy).plan_notes == []
    with pytest.raises(ValidationError):
        SceneRequested(scene_id="a", session_id="b", description="x", target_duration_s=0.2)


@pytest.mark.parametrize("characters", [[" "], ["\t", "Kai"], ["!!"], ["\u3000"], ["a b", " c"]])
def test_odd_character_names_do_not_break_the_planner(characters):
    """Found by the event fuzzing: a blank or punctuation-only name crashed the clause splitter."""
    from events.models import SceneRequested

    request = SceneRequested(scene_id="s", session_id="s", description="Kai fights the dragon, then rests.",
                             characters=characters)
    plan = plan_scene(request, fps=4)
    assert plan.shots and plan.shots[0].shot_number == 1
