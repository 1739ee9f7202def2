"""The input events producers send: news articles, chat messages and feedback labels.

Checked strictly (no silent ``123 -> "123"``): a producer sending the wrong type is a bug worth seeing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from driftline.schema.timestamps import parse_timestamp, to_ms

EventKind = Literal["news", "chat", "feedback"]

Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]
Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Name = Annotated[StrictStr, Field(max_length=256)]


class InputEvent(BaseModel):
    """What every input event has: a timestamp; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    timestamp: Timestamp

    def ts_ms(self) -> int:
        """The event's time in epoch milliseconds."""
        return to_ms(self.timestamp)


class NewsEvent(InputEvent):
    """A news article (news input topic)."""

    id: Id
    source: Name
    title: StrictStr
    body: StrictStr
    language: Name = "en"
    url: StrictStr | None = None
    author: Name | None = None

    @property
    def text(self) -> str:
        """Title and body, as the classifier reads them."""
        return f"{self.title}\n\n{self.body}" if self.title else self.body

    @property
    def channel(self) -> str:
        """The outlet (news has no channel of its own)."""
        return self.source


class ChatEvent(InputEvent):
    """A chat message (chat input topic)."""

    id: Id
    conversation_id: Id
    user: Name
    channel: Name
    text: StrictStr
    language: Name = "zh"

    @property
    def source(self) -> str:
        """The sending user."""
        return self.user


class FeedbackEvent(InputEvent):
    """A ground-truth label for one classified event (feedback topic)."""

    event_id: Id
    task: Name
    label: Name
    source: Name = "unknown"


SCHEMAS: dict[str, type[InputEvent]] = {"news": NewsEvent, "chat": ChatEvent, "feedback": FeedbackEvent}
