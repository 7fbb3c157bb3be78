"""One exception root for the whole platform. Stdlib only: the clients import it.

Third-party errors are translated at the boundary with ``raise ... from e``; every message says what to do next.
"""


class TritonRepoError(Exception):
    """Root of every error this project raises."""


class SpecError(TritonRepoError, ValueError):
    """A model spec asks for something impossible; the message names the model and the field."""


class ToolNotFoundError(TritonRepoError):
    """tritonserver, perf_analyzer, weights or data are missing: run scripts/setup.sh."""


class ServerError(TritonRepoError):
    """The local tritonserver failed to start, to become ready, or to load a model. Carries the log's tail."""

    def __init__(self, message: str, *, log_tail: str = "", log_file: str | None = None):
        self.log_tail = log_tail
        self.log_file = log_file
        full = message
        if log_file:
            full += f"\n(server log: {log_file})"
        if log_tail:
            full += "\n--- last lines of the server log ---\n" + log_tail
        super().__init__(full)


class ModelLoadError(ServerError):
    """One or more models failed to load; ``failed`` maps model name to Triton's reason."""

    def __init__(self, failed: dict[str, str], **kw):
        self.failed = dict(failed)
        lines = "\n".join(f"  {name}: {why}" for name, why in sorted(self.failed.items()))
        super().__init__(f"tritonserver could not load {len(self.failed)} model(s):\n{lines}", **kw)


class ValidationError(TritonRepoError):
    """An exported artifact does not match its framework model; nothing was written to the repository."""

    def __init__(self, artifact: str, failures: list[str]):
        self.artifact = artifact
        self.failures = list(failures)
        body = "\n".join(f"  - {f}" for f in self.failures)
        super().__init__(f"{artifact} failed numeric validation ({len(self.failures)} check(s)):\n{body}")


class AddError(TritonRepoError):
    """``tritonrepo add`` cannot serve the model as asked (no batch axis, an op or dtype Triton lacks...)."""


class RenderDriftError(TritonRepoError):
    """Committed config.pbtxt files differ from what the specs render: run `tritonrepo render`."""


# --- client-side errors (gRPC status codes mapped to what a caller should do) -------------------------------


class ClientError(TritonRepoError):
    """A request to Triton failed. ``status`` is the gRPC status name, ``model`` the model asked."""

    retriable = False

    def __init__(self, message: str, *, model: str | None = None, status: str | None = None):
        self.model = model
        self.status = status
        prefix = f"[{model}] " if model else ""
        super().__init__(prefix + message)


class InvalidInputError(ClientError):
    """The server rejected the input (INVALID_ARGUMENT): fix the request; retrying will not help."""


class ModelNotFoundError(ClientError):
    """The model is unknown to or not ready on the server (NOT_FOUND / UNAVAILABLE for a model)."""


class ServerUnavailableError(ClientError):
    """The server cannot be reached or is shutting down (UNAVAILABLE): retry later or check the URL."""

    retriable = True


class DeadlineExceededError(ClientError):
    """The request did not finish within its deadline (DEADLINE_EXCEEDED)."""

    retriable = True


class ServerOverloadedError(ClientError):
    """The model's queue is full (RESOURCE_EXHAUSTED / UNAVAILABLE with a full queue): slow down and retry."""

    retriable = True


class ServerInternalError(ClientError):
    """The server failed while executing the request (INTERNAL / UNKNOWN)."""


class StubRestartError(ServerInternalError):
    """A Python-backend step's stub process died (killed, out of memory) and Triton is restarting it ("Stub process
    '...' is not healthy."): the request never ran to completion, so a retry is safe once the stub is back."""

    retriable = True
