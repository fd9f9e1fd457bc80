"""For any valid flow and any events, a call ends at a person, soon, and is never hung up on."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.check import validate_flow
from ivr.flow import DEFAULT_FLOW_PATH, DEFAULT_PROMPTS_DIR, Flow
from ivr.interpreter import Action, CancelTimer, IvrSession, Play, Route, StartTimer, StopPlayback
from ivr.loader import flow_from_data
from routing.skills import HUMAN_FALLBACK_SKILLS, SKILLS

PROMPT_IDS = sorted(p.stem for p in DEFAULT_PROMPTS_DIR.glob("*.wav"))
NODE_KEYS = list("123456789#")
HUMANS = sorted(HUMAN_FALLBACK_SKILLS)


LABEL = {"zh": "词", "en": "words"}
REASONS = ["injury", "no_dispute", "other"]


def outcome(draw: Any, skills: list[str]) -> dict[str, Any]:
    return {"skill": draw(st.sampled_from(skills)), "priority": draw(st.integers(1, 5)),
            "reason": draw(st.sampled_from(REASONS)), "meaning": LABEL}


@st.composite
def valid_flows(draw: Any) -> dict[str, Any]:
    """Small flows shaped as a tree plus extra forward edges: reachable, loop-free, every node exits."""
    count = draw(st.integers(1, 6))
    names = [f"q{i}" for i in range(count)]
    keys: dict[str, dict[str, Any]] = {name: {} for name in names}
    free = {name: list(NODE_KEYS) for name in names}

    def take_key(name: str) -> str:
        key = draw(st.sampled_from(free[name]))
        free[name].remove(key)
        return key

    for i in range(1, count):  # every node is reached from an earlier one
        parent = names[draw(st.integers(0, i - 1))]
        keys[parent][take_key(parent)] = {"goto": names[i], "meaning": LABEL}
    for i, name in enumerate(names):
        keys[name][take_key(name)] = outcome(draw, list(SKILLS))  # every node has a way out
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["goto", "outcome", "repeat"] if i + 1 < count else ["outcome", "repeat"]))
            if kind == "goto":
                keys[name][take_key(name)] = {"goto": names[draw(st.integers(i + 1, count - 1))], "meaning": LABEL}
            elif kind == "outcome":
                keys[name][take_key(name)] = outcome(draw, list(SKILLS))
            else:
                keys[name][take_key(name)] = "repeat"
    any_node: dict[str, Any] = {"0": outcome(draw, HUMANS)}
    if draw(st.booleans()):
        any_node["*"] = "repeat"
    return {
        "name": "generated",
        "start": names[0],
        "any_node": any_node,
        "on_timeout_exhausted": {k: v for k, v in outcome(draw, HUMANS).items() if k != "meaning"},
        "on_invalid_exhausted": {k: v for k, v in outcome(draw, HUMANS).items() if k != "meaning"},
        "reasons": dict.fromkeys(REASONS, LABEL),
        "nodes": {
            name: {
                "prompt": {"id": draw(st.sampled_from(PROMPT_IDS)), "text": "提示"},
                "label": LABEL,
                "keys": keys[name],
                "timeout": draw(st.sampled_from([1, 6, 10.5])),
                "retries": draw(st.integers(0, 3)),
                "max_repeats": draw(st.integers(0, 3)),
            }
            for name in names
        },
    }


KEYS_PRESSED = st.sampled_from([*"0123456789*#ABCD", "x", "12", ""])
EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("digit"), KEYS_PRESSED),
        st.tuples(st.just("timeout"), st.integers(0, 3)),    # 0: the live timer, n: n tokens back
        st.tuples(st.just("finished"), st.integers(0, 3)),   # 0: the live prompt, n: n tokens back
    ),
    max_size=80,
)
ALLOWED_ACTIONS = (Play, StopPlayback, StartTimer, CancelTimer, Route)


def plays_bound(flow: Flow) -> int:
    """Each node is visited once; there it plays its prompt, `*` replays, and per failure two prompts."""
    return sum(1 + n.max_repeats + 2 * n.retries for n in flow.nodes.values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_flows(), events=EVENTS)
def test_any_events_end_at_a_person_within_bounded_steps(data: dict[str, Any], events: list[Any]) -> None:
    assert validate_flow(data, DEFAULT_FLOW_PATH.parent) == []
    flow = flow_from_data(data, DEFAULT_FLOW_PATH.parent)
    session = IvrSession(flow, "prop")
    actions: list[Action] = []
    live = {"play": 0, "timer": 0}
    now = 0.0

    def take(step: list[Action]) -> None:
        assert all(isinstance(a, ALLOWED_ACTIONS) for a in step), step  # nothing like a hang-up exists
        actions.extend(step)
        for a in step:
            if isinstance(a, Play):
                live["play"] = a.token
            elif isinstance(a, StartTimer):
                live["timer"] = a.token

    take(session.start(now))
    for kind, arg in events:
        now += 0.25
        if kind == "digit":
            take(session.digit(arg, now))
        elif kind == "timeout":
            take(session.timeout(live["timer"] - arg, now))
        else:
            take(session.prompt_finished(live["play"] - arg, now))

    # then the caller says nothing at all: the media side lets prompts end and timers fire
    bound = 2 * plays_bound(flow)
    for _ in range(bound):
        if session.done:
            break
        now += 1.0
        if live["timer"] > live["play"]:
            take(session.timeout(live["timer"], now))
        else:
            take(session.prompt_finished(live["play"], now))
    assert session.done, f"no outcome after {bound} silent steps"

    plays = [a for a in actions if isinstance(a, Play)]
    assert len(plays) <= plays_bound(flow)
    routes = [a for a in actions if isinstance(a, Route)]
    assert len(routes) == 1 and actions[-1] == routes[0]
    outcome = routes[0].outcome
    assert outcome.skill in SKILLS and outcome == session.outcome
    rule = session.record.rule
    assert rule is not None
    if rule.kind in ("timeout_exhausted", "invalid_exhausted") or rule.key == "0":
        assert outcome.skill in HUMAN_FALLBACK_SKILLS
    assert session.digit("1", now) == [] and session.timeout(live["timer"], now) == []
    assert session.prompt_finished(live["play"], now) == []


@settings(max_examples=100, deadline=None)
@given(data=valid_flows())
def test_generated_flows_stay_valid_after_a_yaml_round_trip(data: dict[str, Any], tmp_path_factory: Any) -> None:
    import yaml

    from ivr.loader import load_flow

    path = tmp_path_factory.mktemp("flows") / "generated.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    # prompts_dir absent in the data: the shipped prompts are used wherever the file lives
    assert set(load_flow(path).nodes) == set(data["nodes"])
