from director.planner import detect_genre, infer_characters, plan_scene, scene_text, snap_duration
from events.models import SceneRequested


def test_kai_fights_the_dragon_has_the_seed_shape(kai_request):
    plan = plan_scene(kai_request, fps=4)
    assert plan.overall_mood == "intense"
    assert plan.lighting_suggestions == "dramatic shadows"
    first, second = plan.shots[0], plan.shots[1]
    assert (first.shot_number, first.camera_angle, first.duration) == (1, "wide", 3.0)
    assert (second.shot_number, second.camera_angle, second.duration) == (2, "close-up", 2.0)
    assert [s.shot_number for s in plan.shots] == list(range(1, len(plan.shots) + 1))
    assert all(s.shot_count == len(plan.shots) for s in plan.shots)
    assert any(s.expected_motion >= 0.8 for s in plan.shots), "a fight needs an action shot"
    assert all(set(s.characters) <= {"Kai", "Dragon"} and s.characters for s in plan.shots)


def test_planning_is_deterministic(kai_request):
    assert plan_scene(kai_request, fps=4) == plan_scene(kai_request, fps=4)


def test_durations_snap_to_the_render_grid():
    assert snap_duration(2.2, 4) == (2.0, 8)
    assert snap_duration(0.1, 8) == (0.5, 4)
    assert snap_duration(0.1, 2) == (0.5, 2)  # at least two frames, so there is a pair to score


def test_genre_and_characters_from_free_text():
    assert scene_text("Create a scene where Kai fights the dragon") == "Kai fights the dragon"
    assert detect_genre("Mira confesses to Ren at the station").name == "emotional"
    assert detect_genre("a quiet field of flowers").name == "calm"
    assert infer_characters("Later Mira meets Ren") == ["Mira", "Ren"]


def test_characters_are_inferred_when_none_are_given():
    request = SceneRequested(scene_id="s", session_id="x", description="Create a scene where Mira meets Ren")
    plan = plan_scene(request, fps=4)
    assert {"Mira", "Ren"} <= {c for s in plan.shots for c in s.characters}
