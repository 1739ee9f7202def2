"""Valid input events as producers send them, for tests to start from."""

NEWS = {"id": "n1", "timestamp": "2024-01-02T03:04:05Z", "source": "bbc", "title": "Title", "body": "Body"}


CHAT = {
    "id": "c1",
    "timestamp": 1700000000123,
    "conversation_id": "k",
    "user": "u",
    "channel": "ch",
    "text": "hi",
}
