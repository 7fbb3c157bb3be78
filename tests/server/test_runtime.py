"""The local tritonserver runtime: clear load failures, clean shutdown of `tritonrepo serve` on SIGTERM/SIGINT."""

import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tritonrepo.errors import ModelLoadError
from tritonrepo.server import TritonServer, free_port

pytestmark = pytest.mark.server


def test_a_broken_model_fails_start_with_its_name_and_the_log_tail(tiny_repository, tmp_path):
    (tiny_repository / "sbert_tokenizer" / "1" / "model.py").write_text("raise RuntimeError('boom: bad model')\n")
    with pytest.raises(ModelLoadError) as e:
        TritonServer(tiny_repository, log_file=tmp_path / "log").start(timeout_s=120)
    assert "sbert_tokenizer" in e.value.failed and "boom: bad model" in e.value.failed["sbert_tokenizer"]
    assert "boom: bad model" in str(e.value) and str(tmp_path / "log") in str(e.value)


def _ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status == 200
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("when", ["ready", "starting"])
def test_serve_stops_cleanly_on_signal(tiny_repository, tmp_path, sig, when):
    http, log = free_port(), tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-m", "tritonrepo.cli", "serve", "-r", str(tiny_repository),
                             "--http-port", str(http), "--grpc-port", "0", "--metrics-port", "0", "--log-file", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        # "starting": tritonserver has been launched (its log exists) but is still loading models
        while not (_ready(http) if when == "ready" else log.exists()):
            assert time.monotonic() < deadline, f"never reached '{when}'"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "tritonserver stopped (exit code 0)" in out
    assert subprocess.run(["pgrep", "-f", "--", f"--http-port={http}"], capture_output=True).returncode == 1
