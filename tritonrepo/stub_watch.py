"""Healing a Python-backend model whose stub process died (SIGKILL, the OOM killer).

Triton r24.10's Python backend does not restart a dead stub (python_backend removed the restart in r24.07): the
instance answers every request with INTERNAL "Stub process '<instance>' is not healthy." for as long as the server
runs, and the model still reports ready. The dead stub stays a zombie, since Triton reaps a stub only when it unloads
it. ``StubWatch`` runs beside every server the tools start: it notes each stub's model while it lives, and a stub
that stays a zombie for two looks (a stub that ends normally is reaped at once) gets its model reloaded through the
restricted repository API with the run's key. The reload carries the config with its ``stub_restarts`` parameter
counted up, so Triton really reloads it (an unchanged config is a no-op) and keeps serving on the old instances
until the new ones are up. Clients ride out the failed requests in between by retrying them (``StubRestartError``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

STUB = "triton_python_backend_stub"
RESTARTS_PARAMETER = "stub_restarts"


def stub_processes(session: int) -> dict[int, tuple[str | None, bool]]:
    """pid -> (model, dead) for every Python-backend stub in ``session``; a dead stub (a zombie) has no command line
    left, so its model is None."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != session:
                continue
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # a process that ended while being read
            continue
        name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
        if not STUB.startswith(name):  # comm: the first 15 characters of the executable's name
            continue
        if state == "Z":
            found[int(proc.name)] = (None, True)
        elif len(argv) > 1 and argv[0].endswith(STUB.encode()):
            found[int(proc.name)] = (Path(argv[1].decode()).parent.parent.name, False)  # <repo>/<model>/<v>/model.py
    return found


class StubWatch(threading.Thread):
    """Reloads the model of a stub that died, at most ``max_restarts`` times per model (a stub that dies as it
    starts would otherwise be reloaded forever)."""

    def __init__(self, session: int, grpc_url: str, headers: dict[str, str], interval_s: float = 0.5,
                 max_restarts: int = 5):
        super().__init__(name="stub-watch", daemon=True)
        self.session, self.grpc_url, self.headers = session, grpc_url, headers
        self.interval_s, self.max_restarts = interval_s, max_restarts
        self.restarts: dict[str, int] = {}
        self._stopped = threading.Event()
        self._models: dict[int, str] = {}  # pid -> model, noted while the stub lived
        self._suspect: set[int] = set()  # zombies seen once
        self._handled: set[int] = set()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the watch must outlive any one failed look
                log.exception("stub watch: check failed")

    def check(self) -> list[str]:
        """One look; returns the models reloaded."""
        dead = set()
        for pid, (model, is_dead) in stub_processes(self.session).items():
            if not is_dead:
                self._models[pid] = model
            elif pid in self._models and pid not in self._handled:
                dead.add(pid)
        confirmed, self._suspect = dead & self._suspect, dead - self._suspect
        reloaded = []
        for model in sorted({self._models[pid] for pid in confirmed}):
            if self.reload(model):
                reloaded.append(model)
        self._handled |= confirmed
        return reloaded

    def reload(self, model: str) -> bool:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        count = self.restarts.get(model, 0) + 1
        if count > self.max_restarts:
            log.error("a stub of %s died again; it was reloaded %d times already, so it stays broken",
                      model, self.max_restarts)
            return False
        log.warning("a stub of %s died; reloading the model (restart %d)", model, count)
        try:
            with grpcclient.InferenceServerClient(self.grpc_url) as client:
                config = client.get_model_config(model, as_json=True)["config"]
                config.setdefault("parameters", {})[RESTARTS_PARAMETER] = {"string_value": str(count)}
                client.load_model(model, config=json.dumps(config), headers=self.headers)
        except InferenceServerException as e:
            log.error("reloading %s after its stub died failed: %s", model, e.message())
            return False
        self.restarts[model] = count
        return True
