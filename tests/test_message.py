"""Messages (`actord/runtime/message.py`): built through a mutable twin, frozen once built."""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle

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


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_message_pickles_and_copies_whole(protocol: int) -> None:
    message = Message(MessageType.RESPONSE, "a", "b", (1, "x"), "a:7")
    for copied in (
        pickle.loads(pickle.dumps(message, protocol=protocol)),
        copy.copy(message),
        copy.deepcopy(message),
    ):
        assert type(copied) is Message and copied == message
        assert (copied.id, copied.sent_ns) == (message.id, message.sent_ns)


def test_replace_and_explicit_fields_keep_what_they_are_given() -> None:
    message = Message(MessageType.DATA, "a", "b", 1)
    changed = dataclasses.replace(message, payload=2)
    assert (changed.payload, changed.id, changed.sent_ns) == (2, message.id, message.sent_ns)
    given = Message(MessageType.DATA, "a", "b", 1, id=42, sent_ns=7)
    assert (given.id, given.sent_ns) == (42, 7)


def test_message_cannot_be_subclassed() -> None:
    with pytest.raises(TypeError, match="cannot be subclassed"):
        type("Sub", (Message,), {})
