"""bot/rasa_speedups.py: the patched validation accepts and rejects exactly what Rasa's does."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from rasa.core.actions.action import RemoteAction

from bot import rasa_speedups

GOOD: list[dict[str, Any]] = [
    {"events": [], "responses": []},
    {
        "events": [{"event": "slot", "name": "crop", "value": "猕猴桃"}],
        "responses": [{"text": "好"}],
    },
    {
        "events": [
            {"event": "active_loop", "name": "consultation_form"},
            {"event": "pause"},
            {"event": "followup", "name": "action_listen"},
        ],
        "responses": [{"text": "请问是什么作物？", "custom": {"ketepai_source": "kb:x"}}],
    },
]
BAD: list[dict[str, Any]] = [
    {"events": "not a list", "responses": []},
    {"events": [{"event": "slot"}], "responses": []},  # slot without name
    {"events": [], "responses": ["a string, not an object"]},
    {"events": [{"event": "no_such_event"}]},
]


def _original(result: dict[str, Any]) -> bool:
    jsonschema.validate(result, RemoteAction.action_response_format_spec())
    return True


@pytest.mark.parametrize("result", GOOD)
def test_valid_answers_pass_as_before(result: dict[str, Any]) -> None:
    assert _original(result)
    assert rasa_speedups._validate_action_result(None, result) is True


@pytest.mark.parametrize("result", BAD)
def test_invalid_answers_raise_the_same_error(result: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError) as expected:
        _original(result)
    with pytest.raises(jsonschema.ValidationError) as got:
        rasa_speedups._validate_action_result(None, result)
    assert got.value.message.startswith(expected.value.message)
    assert "Failed to validate Action server response" in got.value.message
    assert list(got.value.path) == list(expected.value.path)


def test_apply_patches_rasa_and_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rasa_speedups, "_applied", False)
    monkeypatch.setattr(
        RemoteAction, "_validate_action_result", RemoteAction._validate_action_result
    )
    rasa_speedups.apply()
    rasa_speedups.apply()
    assert RemoteAction._validate_action_result is rasa_speedups._validate_action_result
    action = RemoteAction("action_answer_kb", None)
    assert action._validate_action_result(GOOD[1]) is True
    with pytest.raises(jsonschema.ValidationError):
        action._validate_action_result(BAD[0])


def test_refuses_another_rasa_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import rasa

    monkeypatch.setattr(rasa, "__version__", "3.7.0")
    monkeypatch.setattr(rasa_speedups, "_applied", False)
    with pytest.raises(RuntimeError, match=r"3\.6\.21"):
        rasa_speedups.apply()


def test_events_resolve_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from rasa.shared.core.events import ActionExecuted, Event, SlotSet, UserUttered

    original = Event.resolve_by_type
    resolve = rasa_speedups._make_resolve_by_type(original)
    monkeypatch.setattr(rasa_speedups, "_event_classes", {})
    for name, cls in [("slot", SlotSet), ("user", UserUttered), ("action", ActionExecuted)]:
        assert original(name) is cls
        assert resolve(name) is cls
        assert resolve(name) is cls  # from memory now
    assert set(rasa_speedups._event_classes) == {"slot", "user", "action"}
    assert resolve("topic") is None
    assert resolve("nonsense", SlotSet) is SlotSet
    assert "nonsense" not in rasa_speedups._event_classes  # a default is not remembered
    with pytest.raises(ValueError, match="Unknown event name"):
        resolve("nonsense")


def test_a_tracker_round_trips_with_the_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    from rasa.shared.core.events import Event

    monkeypatch.setattr(rasa_speedups, "_applied", False)
    monkeypatch.setattr(Event, "resolve_by_type", Event.resolve_by_type)
    monkeypatch.setattr(
        RemoteAction, "_validate_action_result", RemoteAction._validate_action_result
    )
    rasa_speedups.apply()
    dumped = [
        {
            "event": "user",
            "text": "猕猴桃叶子有斑",
            "parse_data": {"intent": {"name": "ask_disease"}},
        },
        {"event": "slot", "name": "crop", "value": "猕猴桃"},
        {"event": "action", "name": "action_answer_kb"},
        {"event": "pause"},
    ]
    events = [Event.from_parameters(d) for d in dumped]
    assert [e.type_name for e in events] == ["user", "slot", "action", "pause"]
    assert events[1].value == "猕猴桃"
