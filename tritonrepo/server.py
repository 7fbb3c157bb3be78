"""The real tritonserver, started locally (no Docker, no GPU) from the binary in the nvidia-pytriton wheel.

``TritonServer`` is used by `tritonrepo serve`, the main job, the benchmarks and the pytest fixture alike.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from .errors import ModelLoadError, ServerError, ToolNotFoundError
from .paths import MODEL_REPOSITORY, RUNS, TritonTools, perf_analyzer
from .stub_watch import StubWatch
from .targets import DEFAULT_TARGET, Target

log = logging.getLogger(__name__)

# "failed to load 'sbert' version 1: Invalid argument: ..." (model_lifecycle.cc / model_repository_manager.cc)
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)'(?: version \d+)?: (.*?)\"?$")
# "| sbert | 1 | UNAVAILABLE: Internal: ..." (the model table printed at start)
_TABLE_FAILURE = re.compile(r"^\|\s*(\S+)\s*\|\s*\d+\s*\|\s*UNAVAILABLE: (.*?)\s*\|?$")


# The APIs that change what the server runs, reads or writes: loading a model (a Python-backend model is code),
# registering shared memory (the server maps a region a client names), trace and log settings. Every server a tool
# starts restricts them to requests that carry ADMIN_HEADER with the key it generated for this run (admin_headers);
# health, metadata, model configs, statistics and inference stay open to whoever can reach the address.
RESTRICTED_APIS = "model-repository,shared-memory,trace,logging"
ADMIN_HEADER = "triton-admin-key"
LOOPBACK = "127.0.0.1"
# `--host` / $TRITONREPO_HOST open a started server's ports to that address (0.0.0.0: every interface)
HOST_ENV = "TRITONREPO_HOST"


def default_host() -> str:
    return os.environ.get(HOST_ENV) or LOOPBACK


def _proc_address(hex_address: str) -> tuple[str, int]:
    """``0100007F:1F90`` (/proc/net/tcp, host byte order per 32-bit word) -> ("127.0.0.1", 8080); an IPv4-mapped
    IPv6 address as its IPv4 address."""
    address, port = hex_address.split(":")
    raw = b"".join(int(address[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(address), 8))
    ip = ipaddress.ip_address(raw)
    return str(getattr(ip, "ipv4_mapped", None) or ip), int(port, 16)  # gRPC's IPv6 socket for an IPv4 address


def listening_sockets(session: int) -> set[tuple[str, int]]:
    """The TCP addresses the processes of ``session`` (a process-group leader's pid) listen on, read from the OS."""
    def links(proc: Path):
        try:
            if os.getsid(int(proc.name)) != session:
                return
            for fd in (proc / "fd").iterdir():
                yield os.readlink(fd)
        except OSError:  # a process or a descriptor that closed while being read
            return

    inodes = {link[8:-1] for proc in Path("/proc").iterdir() if proc.name.isdigit()
              for link in links(proc) if link.startswith("socket:[")}
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(_proc_address(fields[1]))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""


def load_failures(log_text: str) -> dict[str, str]:
    failed: dict[str, str] = {}
    for line in log_text.splitlines():
        m = _LOAD_FAILURE.search(line) or _TABLE_FAILURE.search(line.strip())
        if m:
            failed.setdefault(m.group(1), m.group(2).strip())
    return failed


class TritonServer:
    """A tritonserver process serving ``repository``. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        repository: Path,
        *,
        model_config_name: str | None = None,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        log_file: Path | None = None,
        explicit_models: list[str] | None = None,
        log_verbose: int = 0,
        response_cache_mb: int = 0,
        trace_file: Path | None = None,
        sagemaker_port: int = 0,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        python: Path | None = None,
        command: list[str] | None = None,
        launcher: list[str] | None = None,
        host: str | None = None,
        heal_stubs: bool = True,
    ):
        self.repository = Path(repository).resolve()
        self.model_config_name = model_config_name
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_file = Path(log_file).resolve() if log_file else RUNS / f"tritonserver-{self.grpc_port}.log"
        self.explicit_models = explicit_models
        self.log_verbose = log_verbose
        # Triton's local response cache for models whose config enables it (0: off, e.g. for benchmarks, whose
        # repeated inputs would all be cache hits)
        self.response_cache_mb = response_cache_mb
        # Triton trace of every request (timestamps per model, with the client's request_id): `tritonrepo trace`
        self.trace_file = Path(trace_file).resolve() if trace_file else None
        # SageMaker's endpoint (POST /invocations, GET /ping) instead of the HTTP/gRPC APIs: readiness is its /ping
        self.sagemaker_port = sagemaker_port
        self.env = dict(env or {})
        self.extra_args = list(extra_args or [])
        # the interpreter whose packages the Python-backend models see (default: the one running us); the deployment
        # rehearsal gives the serving images' packages alone (paths.IMAGE_PYTHON)
        self.python = Path(python) if python else Path(sys.executable)
        # a deployment's own command line (``tritonserver --model-repository=... ...``, e.g. the compose service's) run
        # instead of the options above, with this machine's install layout and free ports appended
        self.command = list(command) if command else None
        self.launcher = list(launcher or [])  # argv prefix, e.g. a mount namespace that makes the repository read-only
        # the address the HTTP, gRPC and metrics ports bind to: loopback unless the caller opens it
        self.host = host or default_host()
        self.admin_key = secrets.token_urlsafe(32)  # per run; only this process's callers know it
        # reload a Python-backend model whose stub died (stub_watch.py); needs explicit model control, which is
        # why every server the tools start has it (all models loaded at start unless explicit_models says which)
        self.stub_watch: StubWatch | None = None
        self._heal_stubs = heal_stubs and not command and not sagemaker_port
        self.process: subprocess.Popen | None = None
        self._interrupted = threading.Event()  # set by serve_forever's signal handlers, also while starting

    # -- addresses ------------------------------------------------------------------------------------------------
    @property
    def _connect_host(self) -> str:  # where this machine's clients reach the bound address
        host = LOOPBACK if self.host in ("0.0.0.0", "::", "") else self.host
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_url(self) -> str:
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self._connect_host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._connect_host}:{self.metrics_port}/metrics"

    @property
    def admin_headers(self) -> dict[str, str]:
        """gRPC headers of a request to a restricted API (``client.load_model(name, headers=...)``); Triton reads
        the key of a gRPC request from ``triton-grpc-protocol-<key>``."""
        return {f"triton-grpc-protocol-{ADMIN_HEADER}": self.admin_key}

    @property
    def http_admin_headers(self) -> dict[str, str]:
        return {ADMIN_HEADER: self.admin_key}

    def _listen(self) -> list[str]:
        return [f"--{api}-{key}={value}" for api, port in (("http", self.http_port), ("grpc", self.grpc_port),
                                                            ("metrics", self.metrics_port))
                for key, value in (("address", self.host), ("port", port))]

    # -- process ----------------------------------------------------------------------------------------------------
    def argv(self, tools: TritonTools) -> list[str]:
        if self.command:  # this machine's layout and free ports; the command's own restrictions
            return [*self.launcher, str(tools.tritonserver), *self.command[1:],
                    f"--backend-directory={tools.backend_dir}", f"--cache-directory={tools.cache_dir}",
                    *self._listen()]
        argv = [
            *self.launcher,
            str(tools.tritonserver),
            f"--model-repository={self.repository}",
            f"--backend-directory={tools.backend_dir}",
            *self._listen(),
            f"--http-restricted-api={RESTRICTED_APIS}:{ADMIN_HEADER}={self.admin_key}",
            f"--grpc-restricted-protocol={RESTRICTED_APIS}:{ADMIN_HEADER}={self.admin_key}",
            "--allow-cpu-metrics=true",
            "--metrics-config=summary_latencies=true",  # p95 per model on /metrics (deploy/ dashboard)
            f"--log-verbose={self.log_verbose}",
            "--exit-timeout-secs=10",
        ]
        if self.model_config_name:
            argv.append(f"--model-config-name={self.model_config_name}")
        if self.response_cache_mb:
            argv += [f"--cache-directory={tools.cache_dir}", f"--cache-config=local,size={self.response_cache_mb << 20}"]
        if self.sagemaker_port:
            argv += ["--allow-sagemaker=true", f"--sagemaker-port={self.sagemaker_port}", "--allow-http=false",
                     "--allow-grpc=false", "--allow-metrics=false"]
        if self.trace_file:
            argv += ["--trace-config=mode=triton", f"--trace-config=triton,file={self.trace_file}",
                     "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1", "--trace-config=count=-1",
                     "--trace-config=triton,log-frequency=50"]
        argv.append("--model-control-mode=explicit")
        argv += [f"--load-model={m}" for m in (["*"] if self.explicit_models is None else self.explicit_models)]
        return argv + self.extra_args

    @staticmethod
    def environment(tools: TritonTools, python: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        # The Python backend stub runs `python3` from PATH: the given interpreter (default the one running us, the
        # project venv) comes first, so the Python models see its packages (numpy, tokenizers, onnxruntime).
        env["PATH"] = os.pathsep.join([str(Path(python or sys.executable).parent), env.get("PATH", "")])
        libs = [str(tools.lib_dir), sysconfig.get_config_var("LIBDIR") or "", env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        env.setdefault("OMP_NUM_THREADS", "1")  # ORT sets its own thread pools; keep OpenMP users from oversubscribing
        return env

    def start(self, timeout_s: float = 180.0) -> "TritonServer":
        tools = TritonTools.locate()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv(tools)
        shown = " ".join(argv).replace(self.admin_key, "***")
        log.info("starting tritonserver: %s (log: %s)", shown, self.log_file)
        with open(self.log_file, "wb") as out:
            # cwd: the log's folder, not a checkout: the stubs' interpreters put the working directory on sys.path,
            # and a checkout's would hand the models the dev package, which no serving image has
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.log_file.parent,
                                            env=self.environment(tools, self.python) | self.env,
                                            start_new_session=True)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        if self._heal_stubs:
            self.stub_watch = StubWatch(self.process.pid, self.grpc_url, self.admin_headers)
            self.stub_watch.check()  # note every stub before a caller sends anything: one killed before the watch's
            self.stub_watch.start()  # first look would have no model to reload
        if not self._interrupted.is_set():
            log.info("tritonserver ready: grpc %s, http %s, metrics %s", self.grpc_url, self.http_url,
                     self.metrics_url)
        return self

    def _ready(self) -> bool:
        url = (f"http://127.0.0.1:{self.sagemaker_port}/ping" if self.sagemaker_port
               else f"http://{self.http_url}/v2/health/ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._interrupted.is_set():
            if self.process.poll() is not None:
                self._raise_start_failure(f"tritonserver exited with code {self.process.returncode} while starting")
            if self._ready():
                return
            time.sleep(0.25)
        if not self._interrupted.is_set():
            self._raise_start_failure(f"tritonserver was not ready after {timeout_s:.0f} s")

    def _raise_start_failure(self, message: str):
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        failed = load_failures(text)
        kw = dict(log_tail=tail(self.log_file), log_file=str(self.log_file))
        if failed:
            raise ModelLoadError(failed, **kw)
        raise ServerError(message, **kw)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait for a clean exit, SIGKILL the process group if it does not come. Returns the exit code;
        0 also when tritonserver, still loading models, ended on that SIGTERM without handling it."""
        if self.stub_watch:
            self.stub_watch.stop()
            self.stub_watch = None
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout_s)
            return 0 if code == -signal.SIGTERM else code
        except subprocess.TimeoutExpired:
            log.warning("tritonserver did not stop in %.0f s; killing it", timeout_s)
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every TCP socket the server's processes listen on, from /proc."""
        return listening_sockets(self.process.pid) if self.running else set()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self, on_ready=None) -> int:
        """Start, call ``on_ready(self)``, block until SIGINT/SIGTERM, then stop cleanly and return the exit code.

        The signal handlers are installed before the start, so a signal that arrives while models load stops the
        server too. Raises ServerError if the server dies on its own."""

        def on_signal(signum, _frame):
            log.info("received %s; stopping tritonserver", signal.Signals(signum).name)
            self._interrupted.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            if on_ready and not self._interrupted.is_set():
                on_ready(self)
            while not self._interrupted.is_set() and self.running:
                self._interrupted.wait(0.2)
            if self._interrupted.is_set():
                return self.stop() or 0
            code = self.process.returncode if self.process else 1
            raise ServerError(f"tritonserver exited unexpectedly with code {code}",
                              log_tail=tail(self.log_file), log_file=str(self.log_file))
        finally:
            for s, h in old.items():
                signal.signal(s, h)

def check_tools() -> dict[str, Path]:
    """Run tritonserver and perf_analyzer with --help against their libraries; raise naming what is broken."""
    tools = TritonTools.locate()
    checks = [("tritonserver", tools.tritonserver, TritonServer.environment(tools), "--model-repository")]
    binary, env = perf_analyzer()
    checks.append(("perf_analyzer", binary, env, "concurrency-range"))
    for name, path, environment, expected in checks:
        try:
            out = subprocess.run([str(path), "--help"], capture_output=True, text=True, env=environment, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise ToolNotFoundError(f"{name} at {path} does not run: {e}") from e
        if expected not in out.stdout + out.stderr:
            raise ToolNotFoundError(f"{name} --help failed (missing libraries?):\n{(out.stdout + out.stderr)[-2000:]}")
    return {"tritonserver": tools.tritonserver, "python backend": tools.backend_dir / "python",
            "perf_analyzer": binary}


@contextlib.contextmanager
def served(url: str | None, models: list[str] | None = None, repository: Path = MODEL_REPOSITORY,
           target: Target = DEFAULT_TARGET):
    """The gRPC address of the server at ``url``, or without one, of a local server started here with only
    ``models`` loaded (None: the whole repository; the registry's ``with_dependencies`` adds what models need beside
    them) in ``target``'s configs, stopped at the end of the block."""
    if url:
        yield url
        return
    with TritonServer(repository, model_config_name=target, explicit_models=models) as server:
        yield server.grpc_url
