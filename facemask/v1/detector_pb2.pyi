from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Label(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_UNSPECIFIED: _ClassVar[Label]
    LABEL_MASK: _ClassVar[Label]
    LABEL_NO_MASK: _ClassVar[Label]
LABEL_UNSPECIFIED: Label
LABEL_MASK: Label
LABEL_NO_MASK: Label

class Image(_message.Message):
    __slots__ = ("data", "camera_id", "frame_id")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    camera_id: str
    frame_id: str
    def __init__(self, data: _Optional[bytes] = ..., camera_id: _Optional[str] = ..., frame_id: _Optional[str] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("images", "confidence_threshold", "iou_threshold", "tiles")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    confidence_threshold: float
    iou_threshold: float
    tiles: str
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., confidence_threshold: _Optional[float] = ..., iou_threshold: _Optional[float] = ..., tiles: _Optional[str] = ...) -> None: ...

class PixelBox(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: int
    y1: int
    x2: int
    y2: int
    def __init__(self, x1: _Optional[int] = ..., y1: _Optional[int] = ..., x2: _Optional[int] = ..., y2: _Optional[int] = ...) -> None: ...

class NormalizedBox(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("label", "label_name", "score", "box", "box_normalized")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    BOX_NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    label: Label
    label_name: str
    score: float
    box: PixelBox
    box_normalized: NormalizedBox
    def __init__(self, label: _Optional[_Union[Label, str]] = ..., label_name: _Optional[str] = ..., score: _Optional[float] = ..., box: _Optional[_Union[PixelBox, _Mapping]] = ..., box_normalized: _Optional[_Union[NormalizedBox, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_seconds", "decode_seconds", "compute_seconds", "batch_size", "model_runs")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DECODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_RUNS_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    decode_seconds: float
    compute_seconds: float
    batch_size: int
    model_runs: int
    def __init__(self, queue_seconds: _Optional[float] = ..., decode_seconds: _Optional[float] = ..., compute_seconds: _Optional[float] = ..., batch_size: _Optional[int] = ..., model_runs: _Optional[int] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("detections", "width", "height", "camera_id", "frame_id", "timings")
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    width: int
    height: int
    camera_id: str
    frame_id: str
    timings: Timings
    def __init__(self, detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., camera_id: _Optional[str] = ..., frame_id: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "runtime", "input_width", "input_height", "max_batch_size", "sha256", "precision", "variant", "wanted_version", "load_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    WANTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    runtime: str
    input_width: int
    input_height: int
    max_batch_size: int
    sha256: str
    precision: str
    variant: str
    wanted_version: str
    load_error: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., runtime: _Optional[str] = ..., input_width: _Optional[int] = ..., input_height: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., sha256: _Optional[str] = ..., precision: _Optional[str] = ..., variant: _Optional[str] = ..., wanted_version: _Optional[str] = ..., load_error: _Optional[str] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("results", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImageResult]
    model: ModelInfo
    def __init__(self, results: _Optional[_Iterable[_Union[ImageResult, _Mapping]]] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
