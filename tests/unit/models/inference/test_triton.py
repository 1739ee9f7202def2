"""``TritonClient`` without a server: retries with backoff then a clear error, busy or slow servers
read as overloaded (other errors do not), and timeouts and retries come from the settings.
"""

from __future__ import annotations

import time

import pytest
from tritonclient.utils import InferenceServerException

from driftline.apps.testing.harness import free_ports
from driftline.models.inference.base import InferenceError, InferenceOverloadedError, ModelNotReadyError
from driftline.models.inference.triton import TritonClient


async def test_unreachable_server_retries_with_backoff_then_fails_clearly() -> None:
    url = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens here
    async with TritonClient(url, timeout_s=1.0, retries=2, backoff_s=0.2) as client:
        start = time.perf_counter()
        with pytest.raises(InferenceError, match=r"3 attempt\(s\)") as info:
            await client.predict("chat_sentiment", ["你好"])
        elapsed = time.perf_counter() - start
    assert isinstance(info.value, InferenceOverloadedError)  # server away: backpressure, not the input
    assert "chat_sentiment" in str(info.value)
    assert elapsed >= 0.2 * 0.5 + 0.4 * 0.5  # two backoff sleeps happened (with jitter >= 0.5x)
    assert not await TritonClient(url, timeout_s=0.5).is_ready("chat_sentiment")


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (InferenceServerException("slow", status="StatusCode.DEADLINE_EXCEEDED"), InferenceOverloadedError),
        (InferenceServerException("busy", status="StatusCode.RESOURCE_EXHAUSTED"), InferenceOverloadedError),
        (InferenceServerException("down", status="StatusCode.UNAVAILABLE"), InferenceOverloadedError),
        (TimeoutError(), InferenceOverloadedError),
        (InferenceServerException("bad input", status="StatusCode.INVALID_ARGUMENT"), InferenceError),
        (InferenceServerException("stub died", status="StatusCode.INTERNAL"), InferenceError),
        (InferenceServerException("Request for unknown model", status="StatusCode.UNAVAILABLE"),
         ModelNotReadyError),
    ],
)  # fmt: skip
async def test_busy_or_slow_server_is_overloaded_other_errors_are_not(
    error: BaseException, raised: type[InferenceError]
) -> None:
    calls = []

    async def failing() -> None:
        calls.append(1)
        raise error

    client = TritonClient("127.0.0.1:1", timeout_s=1.0, retries=2, backoff_s=0.001)
    with pytest.raises(InferenceError) as info:
        await client._call("infer", "m", None, failing)
    assert type(info.value) is raised
    transient = raised is InferenceOverloadedError
    assert len(calls) == (3 if transient else 1)  # only busy/slow/away is retried by the client itself


def test_client_timeout_and_retries_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from driftline.settings import get_settings

    monkeypatch.setenv("DRIFTLINE_TRITON__CLIENT_TIMEOUT_S", "0.75")
    monkeypatch.setenv("DRIFTLINE_TRITON__CLIENT_RETRIES", "1")
    get_settings.cache_clear()
    try:
        client = TritonClient("127.0.0.1:1")
        assert (client.timeout_s, client.retries) == (0.75, 1)
        assert TritonClient("127.0.0.1:1", timeout_s=5, retries=0).timeout_s == 5
    finally:
        get_settings.cache_clear()
