"""Triton on the shared stack: load the echo python-backend model via the repository API and infer."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

pytestmark = pytest.mark.stack


def test_echo_model_round_trip(triton_grpc_url):
    client = grpcclient.InferenceServerClient(triton_grpc_url)
    assert client.is_server_ready()
    client.load_model("echo")
    assert client.is_model_ready("echo")
    texts = ["hello", "héllo wörld", ""]
    inp = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    result = client.infer(
        "echo",
        [inp],
        outputs=[grpcclient.InferRequestedOutput("ECHO"), grpcclient.InferRequestedOutput("LENGTH")],
    )
    assert [v[0].decode() for v in result.as_numpy("ECHO")] == texts
    assert result.as_numpy("LENGTH").ravel().tolist() == [len(t.encode()) for t in texts]


def test_unknown_model_is_a_clear_error(triton_grpc_url):
    client = grpcclient.InferenceServerClient(triton_grpc_url)
    with pytest.raises(Exception, match="no-such-model"):
        client.load_model("no-such-model")
