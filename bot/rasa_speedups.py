"""Speed-ups for Rasa 3.6.21, found by profiling the Rasa server under load.

`rasa==3.6.21` is pinned exactly, so these patches are written against that version and refuse to
apply to another one (a test checks both the behaviour and the version guard).

1. Validating the action server's answer. `RemoteAction._validate_action_result` calls
   `jsonschema.validate(result, schema)` on every custom-action call. jsonschema's `validate`
   first checks the *schema itself* against its meta-schema, every time; with jsonschema 4.17 and
   Rasa's large EVENTS_SCHEMA that meta-check was 35 % of a Rasa worker's CPU per farmer message
   (py-spy, 2 workers, 150 messages). The patch checks the schema once, keeps one compiled
   validator, and validates every answer with it exactly as before: an invalid answer still raises
   the same `ValidationError` with Rasa's message appended.
"""

from __future__ import annotations

import functools
from typing import Any

RASA_VERSION = "3.6.21"

_applied = False


@functools.lru_cache(maxsize=1)
def _action_result_validator() -> Any:
    """One validator for the constant action-response schema, the schema checked once."""
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction

    schema = RemoteAction.action_response_format_spec()
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _validate_action_result(self: Any, result: dict[str, Any]) -> bool:
    """Drop-in for RemoteAction._validate_action_result (Rasa 3.6.21), same errors."""
    from jsonschema import ValidationError
    from rasa.shared.constants import DOCS_BASE_URL

    try:
        # best_match, as jsonschema.validate does, so the error raised is the same one.
        from jsonschema.exceptions import best_match

        error = best_match(_action_result_validator().iter_errors(result))
        if error is not None:
            raise error
        return True
    except ValidationError as e:
        e.message += (
            f". Failed to validate Action server response from API, "
            f"make sure your response from the Action endpoint is valid. "
            f"For more information about the format visit "
            f"{DOCS_BASE_URL}/custom-actions"
        )
        raise e


_event_classes: dict[str, Any] = {}


def _make_resolve_by_type(original: Any) -> Any:
    def resolve_by_type(type_name: str, default: Any = None) -> Any:
        """Drop-in for Event.resolve_by_type (Rasa 3.6.21), memoised per type name."""
        cls = _event_classes.get(type_name)
        if cls is None:
            cls = original(type_name, default)
            if cls is not None and cls is not default and cls.type_name == type_name:
                _event_classes[type_name] = cls
        return cls

    return resolve_by_type


def _make_parse_message(original: Any) -> Any:
    async def parse_message(
        self: Any, message: Any, tracker: Any = None, only_output_properties: bool = True
    ) -> Any:
        """MessageProcessor.parse_message (Rasa 3.6.21), leaving its result on the message."""
        from bot.rasa_channel import PARSE_ATTR

        result = await original(self, message, tracker, only_output_properties)
        try:
            setattr(message, PARSE_ATTR, result)
        except AttributeError:  # a message type that refuses attributes: nothing captured
            pass
        return result

    return parse_message


def apply() -> None:
    """Patch the running Rasa; idempotent. Raises RuntimeError on another Rasa version."""
    global _applied
    import rasa
    from rasa.core.actions.action import RemoteAction

    if rasa.__version__ != RASA_VERSION:
        raise RuntimeError(
            f"bot.rasa_speedups is written for rasa {RASA_VERSION}, found {rasa.__version__}"
        )
    if _applied:
        return
    from rasa.shared.core.events import Event

    RemoteAction._validate_action_result = _validate_action_result
    Event.resolve_by_type = staticmethod(_make_resolve_by_type(Event.resolve_by_type))
    from rasa.core.processor import MessageProcessor

    MessageProcessor.parse_message = _make_parse_message(MessageProcessor.parse_message)
    _applied = True
