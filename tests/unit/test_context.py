"""The pattern context key: any label reads back as itself."""

from __future__ import annotations

import pytest

from director.context import PatternContext
from director.learning import context_parts, related


@pytest.mark.parametrize("labels", [
    ("close-up", "tense", "dramatic shadows", "procedural-v3"),
    ("wide", "calm", "neon | rain", "comfyui-anime|v2"),
    ("a\\b", "|", "\\|", ""),
    ("", "", "", "\\"),
])
def test_every_label_reads_back_as_itself(labels: tuple[str, str, str, str]) -> None:
    context = PatternContext(*labels)
    assert PatternContext.parse(context.key) == context


def test_keys_without_special_characters_are_what_they_always_were() -> None:
    # The pattern table's existing keys stay valid.
    assert PatternContext("close-up", "tense", "dramatic shadows", "w").key == "close-up|tense|dramatic shadows|w"


def test_a_key_written_before_escaping_reads_as_it_always_did() -> None:
    legacy = "wide|calm|neon | rain|w"  # a lighting label with a bare separator
    assert context_parts(legacy) == {"camera_angle": "wide", "mood": "calm", "lighting": "neon | rain", "workflow": "w"}


def test_a_separator_in_a_label_does_not_join_two_workflows() -> None:
    mine = PatternContext("wide", "calm", "day", "w1").key
    # Once a workflow named "x|w1" would have looked like workflow w1 to a key split on the last "|".
    other = PatternContext("wide", "calm", "day", "x|w1").key
    assert context_parts(other)["workflow"] == "x|w1"
    assert not related(mine, other)
