"""What a started server exposes, read from the OS and tried as an outsider: its ports listen on loopback unless the
caller opens them, and the APIs that change what it runs (model loading, shared memory, trace and log settings)
refuse any request without the key generated for the run."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tritonrepo.server import ADMIN_HEADER, TritonServer

pytestmark = pytest.mark.server


def test_every_socket_of_the_served_repository_listens_on_loopback_only(triton):
    sockets = triton.listening()
    assert {port for _, port in sockets} == {triton.http_port, triton.grpc_port, triton.metrics_port}
    assert {address for address, _ in sockets} == {"127.0.0.1"}


def test_host_opens_the_ports_deliberately(tiny_repository, tmp_path):
    with TritonServer(tiny_repository, host="0.0.0.0", log_file=tmp_path / "log") as server:
        sockets = server.listening()
        assert {port for _, port in sockets} == {server.http_port, server.grpc_port, server.metrics_port}
        assert {address for address, _ in sockets} <= {"0.0.0.0", "::"}  # gRPC binds IPv6 and IPv4 as one
        with grpcclient.InferenceServerClient(server.grpc_url) as client:  # reached through loopback
            assert client.is_model_ready("sbert_tokenizer")


@pytest.fixture
def explicit(tiny_repository, tmp_path):
    with TritonServer(tiny_repository, explicit_models=[], log_file=tmp_path / "log") as server:
        yield server


def _tokenize(client):
    text = np.array([[b"who won the election"]], dtype=np.object_)
    inputs = [grpcclient.InferInput("TEXT", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(text)
    return client.infer("sbert_tokenizer", inputs).as_numpy("input_ids")


def test_a_model_load_without_the_key_is_refused_and_the_tool_loads_with_it(explicit):
    with grpcclient.InferenceServerClient(explicit.grpc_url) as client:
        for headers in (None, {ADMIN_HEADER: explicit.admin_key}, {next(iter(explicit.admin_headers)): "guess"}):
            with pytest.raises(InferenceServerException, match="restricted") as refused:
                client.load_model("sbert_tokenizer", headers=headers)
            assert "UNAVAILABLE" in str(refused.value.status())
        assert not client.is_model_ready("sbert_tokenizer")
        client.load_model("sbert_tokenizer", headers=explicit.admin_headers)
        assert _tokenize(client).shape[0] == 1  # inference needs no key


def test_the_http_api_and_the_other_restricted_apis_refuse_without_the_key(explicit):
    http = httpclient.InferenceServerClient(explicit.http_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            http.load_model("sbert_tokenizer")
        with pytest.raises(InferenceServerException, match="restricted"):
            http.register_system_shared_memory("steal", "/triton_python_backend_shm_region_1", 1024)
        with pytest.raises(InferenceServerException, match="restricted"):
            http.update_log_settings({"log_verbose_level": 1})
        with pytest.raises(InferenceServerException, match="restricted"):
            http.update_trace_settings(settings={"trace_rate": "1"})
        http.load_model("sbert_tokenizer", headers=explicit.http_admin_headers)
        assert http.is_model_ready("sbert_tokenizer")
    finally:
        http.close()
    with grpcclient.InferenceServerClient(explicit.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.register_system_shared_memory("steal", "/triton_python_backend_shm_region_1", 1024)
        assert client.get_server_metadata().name == "triton"  # metadata stays open
