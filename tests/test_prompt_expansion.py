"""Prompt expansion: paraphrases read, gaps filled with recorded draws, clear refusals."""

import pytest

from sora_jax import prompt_expansion
from sora_jax.data.shapes_world import captions

SIZE = dict(frames=17, height=64, width=64)


def test_a_paraphrase_reads_as_its_canonical_caption():
    e = prompt_expansion.expand(
        "A tiny crimson ball heading left, fast, over a grey backdrop", **SIZE, seed=0
    )
    assert e.canonical == "a small red circle moves left quickly on a gray background"
    assert e.sampled == {}  # everything was stated
    (shot,) = captions.parse_detailed_caption(e.detailed)
    (obj,) = shot["objects"]
    assert (obj["color"], obj["shape"], obj["size"], obj["motion"], obj["speed"]) == (
        "red", "circle", "small", "moves left", "quickly",
    )  # fmt: skip
    assert shot["background"] == "gray"


def test_what_is_left_out_is_drawn_recorded_and_reproducible():
    a = prompt_expansion.expand("violet pyramid rising", **SIZE, seed=3)
    assert set(a.sampled) == {"object size", "object speed", "background"}
    assert a.stated[0]["objects"][0] == {
        "color": True, "size": False, "motion": True, "speed": False,
    }  # fmt: skip
    (shot,) = captions.parse_caption(a.canonical)
    assert shot["objects"][0]["size"] == a.sampled["object size"]
    assert shot["background"] == a.sampled["background"]
    assert a == prompt_expansion.expand("violet pyramid rising", **SIZE, seed=3)
    draws = {
        prompt_expansion.expand("violet pyramid rising", **SIZE, seed=s).canonical
        for s in range(12)
    }
    assert len(draws) > 1


def test_still_walls_and_cuts():
    still = prompt_expansion.expand("a big blue box that does not move", **SIZE, seed=0)
    assert "large blue square stays still" in still.canonical
    wall = prompt_expansion.expand("green triangle passes behind a gray wall", **SIZE, seed=0)
    assert "passes behind" in wall.canonical and "small green triangle" in wall.canonical
    shots = prompt_expansion.expand(
        "red circle going left. Then cut to a yellow square falling on white", **SIZE, seed=0
    )
    parsed = captions.parse_detailed_caption(shots.detailed)
    assert len(parsed) == 2 and parsed[1]["cut_frame"] in (5, 9, 13)
    assert parsed[1]["background"] == "white" and parsed[1]["objects"][0]["motion"] == "moves down"


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("a red car drives left", r"cannot read \['car', 'drives'\]"),
        ("it moves left on black", "no shape"),
        ("a red blue circle", "two colours"),
        ("a red circle and a red square", "different colours"),
        ("a still circle moving quickly", "no speed"),
        ("a red circle on black on white", "more than one background"),
        ("   ", "empty prompt"),
    ],
)
def test_prompts_it_cannot_read_are_refused_with_the_reason(prompt, message):
    with pytest.raises(prompt_expansion.PromptNotUnderstood, match=message):
        prompt_expansion.expand(prompt, **SIZE, seed=0)
