"""Profiles: the shipped files parse, plans are deterministic, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.campaign.profile import (
    INCIDENT_KINDS,
    ProfileError,
    find_profile,
    load_plan,
    parse_plan,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in (REPO / "campaigns").glob("*.toml"))

MINIMAL = """
version = 1
name = "t"
seed = 1
duration_s = 100
[quick]
duration_s = 10
min_incident_s = 2
[load]
warmup_s = 5
ab_phase_s = 10
drain_s = 5
tiers = [{ at = 0, rate = 10 }, { at = 50, rate = 20 }]
[services]
count = 2
routes = [{ template = "/a/{id}", weight = 1 }]
"""


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_profiles_parse_and_keep_incidents_inside_the_load(name: str, quick: bool) -> None:
    plan = load_plan(find_profile(name), quick=quick)
    assert plan.name == name
    for incident in plan.incidents:
        assert plan.load_start_s <= incident.start_s < incident.end_s <= plan.load_end_s
        assert incident.kind in INCIDENT_KINDS


def test_nominal_runs_every_incident_kind() -> None:
    plan = load_plan(find_profile("nominal"), quick=True)
    assert {i.kind for i in plan.incidents} == INCIDENT_KINDS


def test_same_text_same_plan() -> None:
    assert parse_plan(MINIMAL, quick=True) == parse_plan(MINIMAL, quick=True)
    assert parse_plan(MINIMAL).sha256 == parse_plan(MINIMAL, quick=True).sha256


def test_quick_scales_load_and_tiers() -> None:
    full, quick = parse_plan(MINIMAL), parse_plan(MINIMAL, quick=True)
    assert full.load_s == 100 and quick.load_s == 10
    assert full.rate_at(full.load_start_s + 60) == 20
    assert quick.rate_at(quick.load_start_s + 6) == 20
    assert quick.phase_at(0) == "warmup" and quick.phase_at(6) == "ab"
    assert quick.rate_at(quick.load_end_s) == 0.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[incident]]\nkind = "meteor"\nstart = 1\nend = 2\n', "unknown kind 'meteor'"),
        ('[[incident]]\nkind = "rgw_down"\nstart = 5\nend = 2\n', "end must be after start"),
        ('[[incident]]\nkind = "rgw_down"\nstart = 5\nend = 200\n', "past duration_s"),
        ('[[incident]]\nkind = "rgw_down"\nstart = 1\nend = 2\nroute = "/a/{id}"\n', "HTTP"),
        ('[[incident]]\nkind = "http_5xx"\nstart = 1\nend = 2\nroute = "/nope"\n', "not in"),
    ],
)
def test_bad_incidents_are_named(extra: str, message: str) -> None:
    with pytest.raises(ProfileError, match="incident 1") as info:
        parse_plan(MINIMAL + extra, where="p.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("p.toml")


def test_bad_field_types_are_named() -> None:
    with pytest.raises(ProfileError, match=r"services\.count: must be an integer"):
        parse_plan(MINIMAL.replace("count = 2", 'count = "two"'))
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_plan("version = = 1")
    with pytest.raises(ProfileError, match="seed: missing"):
        parse_plan(MINIMAL.replace("seed = 1\n", ""))


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match="nominal"):
        find_profile("no-such-profile")


@given(
    start=st.floats(0, 98, allow_nan=False),
    length=st.floats(0.01, 50, allow_nan=False),
    quick=st.booleans(),
)
def test_any_valid_incident_lands_inside_the_load_phase(
    start: float, length: float, quick: bool
) -> None:
    end = min(start + length, 100.0)
    if end <= start:
        return
    text = MINIMAL + f'[[incident]]\nkind = "kafka_down"\nstart = {start!r}\nend = {end!r}\n'
    plan = parse_plan(text, quick=quick)
    (incident,) = plan.incidents
    assert plan.load_start_s <= incident.start_s < incident.end_s <= plan.load_end_s + 1e-6
    assert plan.active_incidents(incident.start_s) == [incident]
