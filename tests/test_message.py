"""Messages (`actord/runtime/message.py`): built through a mutable twin, frozen once built."""

from __future__ import annotations

import dataclasses
import gc

import pytest

from actord import Message, MessageType
from actord.runtime.message import new_message


@pytest.mark.parametrize("build", [Message, new_message])
def test_a_built_message_is_a_frozen_message_with_its_fields(build: object) -> None:
    assert callable(build)
    message = build(MessageType.COMMAND, "a", "b", (1, 2), "a:1")
    assert type(message) is Message
    assert dataclasses.is_dataclass(message)
    fields = (message.type, message.sender, message.recipient, message.payload)
    assert fields == (MessageType.COMMAND, "a", "b", (1, 2))
    assert message.correlation_id == "a:1"
    for name in ("type", "sender", "recipient", "payload", "correlation_id", "id", "sent_ns"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, name, None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(message, name)
    assert not hasattr(message, "__dict__")  # slotted: no attribute can be added either


def test_ids_are_unique_and_send_times_ordered() -> None:
    first = Message(MessageType.DATA, "a", "b", 1)
    second = new_message(MessageType.DATA, "a", "b", 1, None)
    assert second.id > first.id
    assert second.sent_ns >= first.sent_ns
    assert first == second  # equal by content; id and send time are not compared
    assert Message(MessageType.DATA, "a", "b", 1).correlation_id is None


def test_built_messages_are_collected() -> None:
    # The class swap must leave ordinary, collectable objects (no leak per send).
    gc.collect()
    before = sum(1 for o in gc.get_objects() if type(o) is Message)
    messages = [new_message(MessageType.DATA, "a", "b", (i,), None) for i in range(1000)]
    assert sum(1 for o in gc.get_objects() if type(o) is Message) >= before + 1000
    del messages
    gc.collect()
    assert sum(1 for o in gc.get_objects() if type(o) is Message) <= before
