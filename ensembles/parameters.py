"""The config parameters of each Python-backend model, one frozen dataclass per model: a field's name is the
parameter's, its default the value the model runs with when the config does not set it, its type how the config's
string is read. The specs (export/<family>.py) build a deployment's parameters from these classes, rendering refuses
a config whose parameters its model does not declare or cannot read, and each model reads its config back with
``from_config`` from the same definition. Standard library only: this runs in the serving image's Python."""

from __future__ import annotations

from dataclasses import dataclass, fields

DALI_CPU_CODECS = ("vp8", "vp9", "mjpeg")  # what DALI's CPU decoder handles (ensembles/video_io.py)


@dataclass(frozen=True, kw_only=True)
class Parameters:
    """Reading and writing a config's ``parameters`` (name -> string) for the dataclass that declares them."""

    # counted up by tritonrepo/stub_watch.py in the config it reloads a model with after a stub died (an unchanged
    # config would not reload); the model does not read it
    stub_restarts: int = 0

    @classmethod
    def parse(cls, raw: dict[str, str]):
        """The parameters from their strings; a name not declared here or a value of the wrong kind is refused
        with a ValueError that names it."""
        declared = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(declared))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; {cls.__name__} declares {sorted(declared)}")
        return cls(**{name: _read(name, declared[name].default, text) for name, text in raw.items()})

    @classmethod
    def from_config(cls, config: dict):
        """The parameters of a model config as the Python backend hands it over (``args["model_config"]``, parsed);
        a ValueError names the model, and failing ``initialize`` with it fails the load with that message."""
        try:
            return cls.parse({k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()})
        except ValueError as e:
            raise ValueError(f"{config.get('name', 'model')}: {e}") from None

    @classmethod
    def of(cls, **values) -> tuple[tuple[str, str], ...]:
        """(name, string) of just these parameters, checked against the declaration (a spec's deployment sets
        these; rendering adds the defaults of the others)."""
        cls(**values)  # a name not declared: TypeError; a value out of range: ValueError
        return tuple((name, _write(value)) for name, value in values.items())

    def pairs(self) -> tuple[tuple[str, str], ...]:
        """(name, string) of every parameter: what a config holds, so it shows all the model runs with."""
        return tuple((f.name, _write(getattr(self, f.name))) for f in fields(self))


_KINDS = {int: "an integer", float: "a number"}


def _read(name: str, default, text: str):
    kind = type(default)
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"parameter {name}={text!r}: true or false")
        return text.lower() == "true"
    if kind is tuple:  # comma-separated names
        return tuple(part for part in text.split(",") if part)
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"parameter {name}={text!r}: {_KINDS.get(kind, kind.__name__)} is needed") from None


def _write(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float):  # exact, without a trailing ".0" on whole numbers
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


@dataclass(frozen=True, kw_only=True)
class TokenizerParameters(Parameters):
    """``text_tokenizer``: texts (or query/passage pairs) -> token ids, per request padded to its longest row."""

    model_filename: str = "tokenizer.json"  # the tokenizers library's JSON, in the version folder
    max_length: int = 256  # tokens per row; longer rows are truncated (and flagged where the model says so)
    pad_to_multiple_of: int = 1  # a request's width is rounded up to a multiple of this
    max_text_bytes: int = 1 << 20  # one UTF-8 text; longer ones are refused
    max_query_tokens: int = 64  # pairs: a longer query is cut, the passage gets the rest
    max_chars_per_token: int = 100  # texts are cut at max_length x this many characters before tokenizing


@dataclass(frozen=True, kw_only=True)
class EncoderParameters(Parameters):
    """``onnx_encoder``: an ONNX graph on ONNX Runtime's CPU provider (see that module for sort_by_length and
    sequence_multiple)."""

    model_filename: str = "model.onnx"
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    allow_spinning: int = 0  # ONNX Runtime intra-op thread spinning (session.intra_op.allow_spinning)
    sort_by_length: bool = False
    padding_tolerance: float = 0.1
    max_sub_batch: int = 64
    sequence_multiple: int = 1


@dataclass(frozen=True, kw_only=True)
class TorchEncoderParameters(EncoderParameters):
    """``torch_encoder``: the Hugging Face checkpoint in PyTorch (the GPU profiles' stand-in for the encoders)."""

    checkpoint: str = "checkpoint"  # folder in the version folder holding config.json (and weights)
    torch_head: str = "logits"  # logits, or mean_pool_l2 (sentence embeddings)
    torch_dtype: str = "float16"
    torch_device: str = ""  # empty: the instance's GPU, or the CPU for KIND_CPU instances
    random_weights: bool = False  # seeded random weights of the checkpoint's architecture (speed only)


@dataclass(frozen=True, kw_only=True)
class DecoderParameters(Parameters):
    """``ner_decoder``: token logits -> entities."""

    model_filename: str = "labels.json"
    aggregation_strategy: str = "simple"  # the default per request: simple, first, average, max or viterbi
    max_text_bytes: int = 1 << 20
    max_tokens: int = 128


@dataclass(frozen=True, kw_only=True)
class VideoLimits(Parameters):
    """What one video request may ask (export/transnetv2.py's VIDEO_LIMITS and LIVE_LIMITS set them per model)."""

    max_request_bytes: int = 256 << 20
    max_frames: int = 1_000_000
    max_pixels: int = 4096 * 2160
    max_seconds: float = 600.0
    max_stream_frames: int = 1_000_000_000  # video_shots_live: all segments of one stream

    def __post_init__(self):
        for name in VideoLimits.__annotations__:  # the limits (not what subclasses add)
            if (value := getattr(self, name)) <= 0:
                raise ValueError(f"parameter {name}={value!r}: a positive number is needed")


@dataclass(frozen=True, kw_only=True)
class VideoDecodeParameters(VideoLimits):
    """``video_decode``: encoded video -> frames (FFmpeg, or DALI's CPU decoder for ``dali_codecs``)."""

    dali_codecs: tuple[str, ...] = DALI_CPU_CODECS
    decode_threads: int = 0  # 0: the decoder's default


@dataclass(frozen=True, kw_only=True)
class ShotParameters(VideoDecodeParameters):
    """``video_shots``: encoded video -> shots, calling the shot model (and video_decode for some codecs)."""

    shot_model: str = "transnetv2"
    window_batch: int = 2  # 100-frame windows per shot-model request
    decode_model_codecs: tuple[str, ...] = ()  # codecs sent to the video_decode model (GPU targets: DALI + NVDEC)


BY_MODULE = {"text_tokenizer": TokenizerParameters, "onnx_encoder": EncoderParameters,
             "torch_encoder": TorchEncoderParameters, "ner_decoder": DecoderParameters,
             "video_decode": VideoDecodeParameters, "video_shots": ShotParameters}
