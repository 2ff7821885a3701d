"""Which model the inference service runs, and rolling updates to the cluster's version.

The model a replica should run (*wanted*) is the version promoted for the cluster in Redis
(``facemask models promote``, :mod:`facemask.infra.rollout`) when there is one, else the
``model`` setting (``FACEMASK_INFERENCE_MODEL``: ``upstream``, a version of the local
model store, or a path; :mod:`facemask.model.registry`).

:class:`ModelLoader` turns a :class:`~facemask.model.registry.ModelVersion` into a warm
detector on the configured runtime: the ``upstream`` version exactly as before (the
``auto`` runtime measures or reads its cached choice), another version from its own files
(``tensorflow``: ``model.pb``; ``tflite``: ``model.float32.tflite`` or, with
``model_variant=int8``, ``model.int8.tflite``; ``auto``: the fastest of the version's
variants whose dev-set AP50 is known to be within the tolerance, see
:func:`version_files`).

:class:`ModelWatcher` is the service's ``model-watcher`` loop (a
:class:`~facemask.infra.worker.Worker` under the service's supervisor: restarted when it
dies, fatal after too many deaths). It listens on the rollout channel and reads the
active key every ``model_poll_interval`` seconds (a missed message is only a delay). On a
change it fetches the version (blobs from Redis into the local store, sha256 verified),
loads and warms it on its own thread (never on the model thread), then hands it to the
batcher, which switches between two batches (:meth:`DynamicBatcher.swap`); the detector it
replaced is closed once nothing runs on it. Frames are neither lost nor run twice: they
stay in the batcher's queue throughout and each result names the version that ran it.

A version that cannot be fetched, loaded or warmed is not swapped in: the service keeps
serving the one it runs, logs why, counts ``facemask_model_load_failures_total{reason}``
(:data:`FAILURE_REASONS`) and says so in :attr:`ModelWatcher.status` (gRPC
``GetModelInfo``: ``wanted_version`` and ``load_error``). It is tried again when the
promoted version changes, else after a back-off growing to ``model_retry_interval``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facemask.contracts.streams import StreamLayout
from facemask.core.preprocess import INPUT_SIZE
from facemask.infra import rollout
from facemask.infra.backoff import Backoff
from facemask.infra.redisconn import RedisClient, classify
from facemask.infra.worker import Worker
from facemask.model import store as modelstore
from facemask.model import variants as mv
from facemask.model.detector import Detector, create_detector
from facemask.model.registry import UPSTREAM, ModelRegistry, ModelVersion, RegistryError
from facemask.model.runtime.auto import AutoConfig, ModelFiles, select_runtime
from facemask.model.runtime.base import Runtime
from services.inference.batcher import DynamicBatcher, batch_limit
from services.inference.config import InferenceSettings

logger = logging.getLogger(__name__)

WARM_EVERY_SIZE_UP_TO = 64
FAILURE_REASONS = ("fetch", "load", "warmup", "incompatible")
"""Why a wanted version is not running (label of ``facemask_model_load_failures_total``):
its files could not be had or verified, its runtime failed to load, its warm-up batches
failed, or it does not fit this service (another input size)."""
LISTEN_SLICE_S = 0.5
"""Longest block on the rollout channel, so a stop is noticed quickly."""
SWAP_WAIT_S = 60.0
"""How long the watcher waits for the model thread to take a new detector."""


def warmup_sizes(max_batch_size: int, runtime: Any) -> tuple[int, ...]:
    """Batch sizes to run once before a model serves: every size the batcher can form (up
    to 64, then the largest), since the first run of a new input shape builds its oneDNN
    kernels (15-100 ms) and would stall live frames. A runtime with its own batch limit
    (TFLite runs one image per invoke) needs only the sizes up to that limit."""
    top = batch_limit(max_batch_size, runtime)
    return tuple(sorted(set(range(1, min(top, WARM_EVERY_SIZE_UP_TO) + 1)) | {top}))


def variant_of(detector: Detector) -> str:
    """``runtime-precision`` of a detector (e.g. ``tflite-int8``; a bounded label)."""
    return f"{detector.runtime.name}-{detector.precision}"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A detector and the model version it runs."""

    detector: Detector
    version: str
    owned: bool = True
    """Whether the service closes it once replaced (False: the caller's detector)."""

    @property
    def variant(self) -> str:
        """``runtime-precision`` it runs as."""
        return variant_of(self.detector)


class ModelLoadError(RuntimeError):
    """A version could not be made ready; ``reason`` is one of :data:`FAILURE_REASONS`."""

    def __init__(self, reason: str, version: str, detail: str) -> None:
        super().__init__(f"model {version}: {reason}: {detail}")
        self.reason = reason
        self.version = version
        self.detail = detail


def _version_file(version: ModelVersion, variant: str) -> Path | None:
    try:
        return version.file(variant)
    except (RegistryError, OSError):
        return None


def version_files(version: ModelVersion) -> ModelFiles:
    """The files of a stored version that the ``auto`` runtime chooses among
    (:func:`~facemask.model.runtime.auto.select_runtime`): its ``model.pb`` and
    ``.tflite`` files, with their dev-set AP50 deltas to float32 from the version's own
    card (:func:`~facemask.model.variants.card_ap50_deltas`), else from the accuracy
    card keyed by the ``model.pb`` sha256 (the pinned model's figures); its measurements
    are cached per version."""
    source = _version_file(version, "tf")
    tflite = {
        precision: path
        for precision in ("float32", "int8")
        if (path := _version_file(version, precision)) is not None
    }
    deltas = mv.card_ap50_deltas(version.card)
    if not deltas and source is not None:
        deltas = mv.load_ap50_deltas(modelstore.sha256_file(source))
    return ModelFiles(
        source,
        tflite,
        deltas,
        model_id=version.version,
        cache_file=f"{Path(mv.CACHE_FILE).stem}.{version.version}.json",
    )


class ModelLoader:
    """Creates and warms detectors for versions of the model store (module docstring)."""

    def __init__(self, settings: InferenceSettings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry

    def resolve(self, ref: str) -> ModelVersion:
        """The version ``ref`` names (``upstream``, an id or prefix, a path); raises
        :class:`~facemask.model.registry.RegistryError`."""
        return self.registry.get(ref)

    def load(self, version: ModelVersion) -> LoadedModel:
        """A detector of ``version`` on the configured runtime (not warmed)."""
        settings = self.settings
        conf, iou = settings.confidence, settings.iou
        if version.version == UPSTREAM:  # the pinned model: the runtime's own files
            detector = create_detector(settings.runtime_config(), conf=conf, iou=iou)
            return LoadedModel(detector, UPSTREAM)
        runtime = settings.effective_runtime
        options = settings.runtime_options()
        if runtime == "auto":
            config = settings.runtime_config()
            assert isinstance(config, AutoConfig)
            chosen = select_runtime(config, version_files(version))
            detector = Detector(
                chosen,
                conf=conf,
                iou=iou,
                model_version=version.version,
                model_sha256=_sha256_of(chosen),
            )
            return LoadedModel(detector, version.version)
        asked = options.get("variant") if runtime == "tflite" else None
        wanted = asked if asked in ("float32", "int8") else None  # upstream: the default
        path, variant = version.runtime_file(runtime, wanted)
        if runtime == "tflite":  # float32 unless int8 is asked for or is all there is
            options["variant"] = variant
        detector = create_detector(runtime, model_path=path, conf=conf, iou=iou, **options)
        return LoadedModel(detector, version.version)

    def warm(self, detector: Detector) -> None:
        """Run every batch size the batcher forms once (when ``warmup`` is on)."""
        if self.settings.warmup:
            start = time.monotonic()
            detector.warmup(warmup_sizes(self.settings.max_batch_size, detector.runtime))
            logger.info("model warmed up", extra={"seconds": round(time.monotonic() - start, 2)})

    def prepare(self, version: ModelVersion) -> LoadedModel:
        """:meth:`load` and :meth:`warm`, or :class:`ModelLoadError` saying which failed
        (the half-made detector is closed)."""
        try:
            loaded = self.load(version)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError("load", version.version, _describe(exc)) from exc
        detector = loaded.detector
        try:
            if tuple(detector.runtime.input_size) != tuple(INPUT_SIZE):
                raise ModelLoadError(
                    "incompatible",
                    version.version,
                    f"input size {detector.runtime.input_size}; this service feeds {INPUT_SIZE}",
                )
            try:
                self.warm(detector)
            except Exception as exc:
                raise ModelLoadError("warmup", version.version, _describe(exc)) from exc
        except BaseException:
            _close_quietly(detector)
            raise
        return loaded


def _sha256_of(runtime: Runtime) -> str:
    path = getattr(runtime, "model_path", None)
    return modelstore.sha256_file(Path(path)) if path else ""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300]


def _close_quietly(detector: Detector) -> None:
    try:
        detector.close()
    except Exception:
        logger.exception("closing a model failed")


@dataclass(slots=True)
class ModelStatus:
    """What a replica runs and what it should run (gRPC ``GetModelInfo``, logs)."""

    version: str
    variant: str
    wanted: str
    error: str = ""
    """Why ``wanted`` is not running (empty: it is, or it is being loaded)."""
    reason: str = ""


@dataclass(slots=True)
class _Failure:
    version: str
    token: str
    attempts: int
    retry_at: float


@dataclass(slots=True)
class _Wanted:
    version: str
    token: str = ""
    """Changes with every promotion (a re-promotion of a failed version retries it)."""


@dataclass(slots=True)
class _Listener:
    pubsub: Any = None
    backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))


class ModelWatcher:
    """Follows the cluster's promoted version (module docstring)."""

    def __init__(
        self,
        *,
        client: RedisClient,
        layout: StreamLayout,
        loader: ModelLoader,
        configured: ModelVersion | str,
        poll_interval: float,
        retry_interval: float,
        on_change: Callable[[LoadedModel, ModelStatus], object] | None = None,
        on_failure: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client: Any = client
        self.layout = layout
        self.loader = loader
        self._configured = configured if isinstance(configured, ModelVersion) else None
        self.configured = configured.version if isinstance(configured, ModelVersion) else configured
        """The version run when none is promoted (the ``model`` setting, resolved)."""
        self.poll_interval = poll_interval
        self.on_change = on_change
        self.on_failure = on_failure
        self.clock = clock
        self.batcher: DynamicBatcher | None = None
        self.current: LoadedModel | None = None
        self._retry = Backoff(retry_interval / 16, retry_interval, jitter=0.1, spread="below")
        self._failure: _Failure | None = None
        self._lock = threading.Lock()
        self._status = ModelStatus("", "", self.configured)
        self._listener = _Listener()
        self.worker = Worker("model-watcher", self._loop)

    def initial(self, given: LoadedModel | None = None) -> LoadedModel:
        """The model to start with: ``given`` (the caller's), else the promoted version
        when it loads (a failure is reported as later ones are), else the configured
        one (whose failure is the caller's: the service cannot start)."""
        loaded = given
        if loaded is None:
            wanted = self.wanted()
            if wanted is not None and wanted.version != self.configured:
                self._set_status(wanted=wanted.version)
                try:
                    loaded = self.prepare(wanted.version)
                except ModelLoadError as exc:
                    self._failed(wanted, exc)
        if loaded is None:
            loaded = self.prepare(self.configured)
        self.current = loaded
        self._set_status(version=loaded.version, variant=loaded.variant)
        if self._failure is None:
            self._set_status(wanted=loaded.version)
        return loaded

    def attach(self, batcher: DynamicBatcher) -> None:
        """The batcher running :attr:`current` (before :meth:`start`)."""
        self.batcher = batcher

    # -- state -----------------------------------------------------------------------

    @property
    def status(self) -> ModelStatus:
        """A copy of what runs and what is wanted."""
        with self._lock:
            s = self._status
            return ModelStatus(s.version, s.variant, s.wanted, s.error, s.reason)

    def _set_status(self, **changes: str) -> ModelStatus:
        with self._lock:
            for name, value in changes.items():
                setattr(self._status, name, value)
            s = self._status
            return ModelStatus(s.version, s.variant, s.wanted, s.error, s.reason)

    # -- the loop --------------------------------------------------------------------

    def start(self) -> None:
        """Start the ``model-watcher`` thread."""
        self.worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a load in progress finishes first) and the subscription."""
        self.worker.stop(timeout)
        self._unsubscribe()

    def _loop(self, worker: Worker) -> None:
        next_check = self.clock()
        while not worker.stopping:
            notified = self._listen(min(LISTEN_SLICE_S, max(0.0, next_check - self.clock())))
            if worker.stopping:
                return
            if notified or self.clock() >= next_check:
                self.check()
                next_check = self.clock() + self.poll_interval

    def _listen(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a message on the rollout channel; True when one
        came. Any failure (Redis down, a missing ACL permission): the subscription is
        dropped and made again after a back-off; polling goes on meanwhile."""
        listener = self._listener
        try:
            if listener.pubsub is None:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.layout.model_events)
                listener.pubsub = pubsub
            message = listener.pubsub.get_message(timeout=timeout)
            listener.backoff.reset()
            return message is not None and message.get("type") == "message"
        except Exception as exc:  # Redis down, no permission...: the polls go on
            self._unsubscribe()
            delay = listener.backoff.next()
            logger.warning(
                "rollout channel unreachable; polling only",
                extra={
                    "error": _describe(exc),
                    "kind": classify(exc),
                    "retry_in_s": round(delay, 2),
                },
            )
            self.worker.wait(min(delay, self.poll_interval))
            return False

    def _unsubscribe(self) -> None:
        pubsub, self._listener.pubsub = self._listener.pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                logger.debug("closing the rollout subscription failed", exc_info=True)

    def wanted(self) -> _Wanted | None:
        """The version promoted in Redis (else the configured one); None when Redis does
        not answer (a fault: counted by nobody, logged; the next poll retries)."""
        try:
            promoted = rollout.active(self.client, layout=self.layout)
        except Exception as exc:  # Redis down, or a malformed key: the next poll retries
            logger.warning(
                "cannot read the promoted model version",
                extra={"error": _describe(exc), "kind": classify(exc)},
            )
            return None
        if promoted is None:
            return _Wanted(self.configured)
        return _Wanted(promoted.version, f"{promoted.version}@{promoted.promoted_at}")

    def check(self) -> bool:
        """One look at the promoted version; loads and swaps it in when it is not the one
        running (and not a failed one still waiting out its back-off). True on a swap."""
        wanted = self.wanted()
        if wanted is None or self.current is None:
            return False
        if wanted.version == self.current.version:
            self._failure = None
            if self.status.wanted != wanted.version or self.status.error:
                self._set_status(wanted=wanted.version, error="", reason="")
            return False
        failure = self._failure
        if (
            failure is not None
            and failure.version == wanted.version
            and failure.token == wanted.token
            and self.clock() < failure.retry_at
        ):
            return False
        self._set_status(wanted=wanted.version, error="", reason="")
        try:
            loaded = self.prepare(wanted.version)
        except ModelLoadError as exc:
            self._failed(wanted, exc)
            return False
        if self.worker.stopping:  # the service stops: nothing to swap into
            _close_quietly(loaded.detector)
            return False
        return self.install(loaded)

    # -- loading and swapping --------------------------------------------------------

    def fetch(self, version: str) -> ModelVersion:
        """The version's files in the local store (downloaded from Redis when missing,
        sha256-verified); :class:`ModelLoadError` ``fetch`` when they cannot be had."""
        try:
            if self._configured is not None and version == self._configured.version:
                return self._configured
            if version == UPSTREAM:
                return self.loader.resolve(version)
            return rollout.fetch_version(
                self.client, self.loader.registry, version, layout=self.layout
            )
        except Exception as exc:  # whatever it is, the version is not had: reported
            raise ModelLoadError("fetch", version, _describe(exc)) from exc

    def prepare(self, version: str) -> LoadedModel:
        """Fetch, load and warm ``version`` on this thread; :class:`ModelLoadError`."""
        start = time.monotonic()
        logger.info("loading model version", extra={"version": version})
        loaded = self.loader.prepare(self.fetch(version))
        logger.info(
            "model version ready",
            extra={
                "version": version,
                "variant": loaded.variant,
                "seconds": round(time.monotonic() - start, 2),
            },
        )
        return loaded

    def install(self, loaded: LoadedModel) -> bool:
        """Hand ``loaded`` to the batcher; once the model thread took it, close the one it
        replaced (when the service owns it) and report the change. False when the model
        thread did not take it (it is dead or stuck, or the service stops)."""
        previous, batcher = self.current, self.batcher
        assert previous is not None and batcher is not None, "attach() first"
        done: Future[Detector] = batcher.swap(loaded.detector, loaded.version)
        deadline = self.clock() + SWAP_WAIT_S
        while True:
            try:
                replaced = done.result(timeout=LISTEN_SLICE_S)
                break
            except FutureTimeout:
                if self.worker.stopping:
                    return False  # the batcher's close hands it back unused
                if self.clock() >= deadline or not batcher.model_alive:
                    # The model thread is dead or stuck: the supervisor's verdict follows.
                    logger.error("the model thread did not take the new model")
                    return False
        self.current = loaded
        self._failure = None
        self._retry.reset()
        status = self._set_status(
            version=loaded.version,
            variant=loaded.variant,
            wanted=loaded.version,
            error="",
            reason="",
        )
        if replaced is loaded.detector:  # superseded, never ran (not expected: one swapper)
            return False
        if previous.owned and replaced is previous.detector:
            _close_quietly(replaced)
        logger.info(
            "model version swapped in",
            extra={"version": loaded.version, "variant": loaded.variant, "was": previous.version},
        )
        if self.on_change is not None:
            self.on_change(loaded, status)
        return True

    def _failed(self, wanted: _Wanted, exc: ModelLoadError) -> None:
        failure = self._failure
        same = failure is not None and (failure.version, failure.token) == (
            wanted.version,
            wanted.token,
        )
        attempts = failure.attempts + 1 if same and failure is not None else 1
        delay = self._retry.delay(attempts)
        self._failure = _Failure(wanted.version, wanted.token, attempts, self.clock() + delay)
        status = self._set_status(
            wanted=wanted.version, error=f"{exc.reason}: {exc.detail}", reason=exc.reason
        )
        if self.on_failure is not None:
            self.on_failure(exc.reason)
        logger.error(
            "model version not loaded; still serving the previous one",
            extra={
                "version": wanted.version,
                "serving": self.current.version if self.current else "",
                "reason": exc.reason,
                "error": exc.detail,
                "attempts": attempts,
                "retry_in_s": round(delay, 1),
            },
        )
        if self.on_change is not None and self.current is not None:
            self.on_change(self.current, status)
