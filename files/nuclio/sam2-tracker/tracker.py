"""SAM 2 video tracking one frame at a time, as CVAT's tracker protocol delivers frames.

Why streaming: sam2's ``SAM2VideoPredictor`` expects the whole video up front (``init_state`` loads every
frame), while CVAT sends one frame per call and expects the shape on it. A ``Track`` keeps one object's
inference state and feeds it frames as they come, running the predictor's own code for each new frame
(``propagate_in_video`` over exactly that frame), so the result is what the offline predictor gives
for the same frames; ``tests/sam2/test_sam2_tracker.py`` checks that equivalence.

Bounded memory: SAM 2 reads, for frame t, the conditioning frame (the prompt), the memories of frames
t-1..t-(num_maskmem-1) and the object pointers of up to ``max_obj_ptrs_in_encoder`` earlier frames
(sam2/modeling/sam2_base.py, ``_prepare_memory_conditioned_features``). A Track keeps exactly that window
of per-frame outputs; older ones, and the frame's pixels and image features once the call is answered, are
dropped. Sessions (one per tracked shape) live in a ``Sessions`` store bounded by age, by a quota per
caller and by a global count, so that one caller cannot evict everyone else's (see ``Sessions``).

Settings (environment, read by ``Tracker.from_env``): MODEL, MODEL_CFG, MODEL_DIR, SAM2_DEVICE as both SAM 2
functions read them (sam2_runtime.py), SAM2_TRACKER_MAX_SESSIONS (default 64),
SAM2_TRACKER_SESSION_TTL seconds (default 3600) and SAM2_TRACKER_MAX_SHAPES (default 16: shapes one call
may carry, refused with HTTP 400 past it, and the sessions one caller may hold).
"""

from __future__ import annotations

import io
import os
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sam2_runtime import model_settings

DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SHAPES, DEFAULT_SESSION_TTL = 64, 16, 3600.0


class TrackingError(ValueError):
    """A request the annotator must act on (restart tracking); the handler answers it with a 4xx."""


class SessionGone(TrackingError):
    """The session is not (or no longer) held by this worker."""


class Frames:
    """The inference state's "images": frames appended as they arrive; only the one being tracked is held.

    sam2 reads ``images[frame_idx]`` only for the frame being tracked, and only when its features are not cached
    (``_get_image_feature``), so asking for any other frame is a bug in this module, not the annotator's: it raises.
    """

    def __init__(self) -> None:
        self.count = 0
        self.newest: torch.Tensor | None = None

    def append(self, image: torch.Tensor) -> int:
        self.newest, self.count = image, self.count + 1
        return self.count - 1

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        if index != self.count - 1 or self.newest is None:
            raise IndexError(f"frame {index} is no longer held (newest is {self.count - 1})")
        return self.newest


@dataclass
class Frame:
    """One call's frame, decoded and encoded once for every shape in the call."""

    image: torch.Tensor  # 3 x S x S, normalised, on the model's device
    width: int
    height: int
    backbone: dict | None = None  # the image encoder's output, shared by every track stepping on this frame

    @classmethod
    def decode(cls, predictor: Any, encoded: bytes) -> Frame:
        """Decode and normalise exactly as sam2's ``load_video_frames`` does for a JPEG folder
        (sam2/utils/misc.py, ``load_video_frames_from_jpg_images``: ``_load_img_as_tensor``'s float64 pixels are
        stored into a float32 tensor, then ImageNet mean/std in float32; normalising in float64 instead moved the
        logits by ~3e-7, enough that the equivalence test could not ask for identical ones)."""
        from sam2.utils.misc import _load_img_as_tensor

        image, height, width = _load_img_as_tensor(io.BytesIO(encoded), predictor.image_size)
        image = image.float()
        mean = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
        std = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
        return cls(((image - mean) / std).to(predictor.device), width, height)

    def encode(self, predictor: Any) -> None:
        """The image encoder, run once: what ``_get_image_feature`` would compute for this frame."""
        if self.backbone is None:
            self.backbone = predictor.forward_image(self.image.float().unsqueeze(0))

    def feature_cache(self, index: int) -> dict:
        """An inference state's ``cached_features`` holding this frame as frame ``index`` (sam2 then skips the encoder)."""
        return {index: (self.image.float().unsqueeze(0), self.backbone)} if self.backbone is not None else {}


@dataclass
class Track:
    """One object followed through a stream of frames."""

    predictor: Any
    state: dict
    frames: Frames
    width: int
    height: int
    touched: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, predictor: Any, frame: Frame, box: tuple[float, float, float, float]) -> tuple[Track, np.ndarray]:
        """Prompt SAM 2 with a box on the first frame; the mask logits there (H x W, the frame's size)."""
        frames = Frames()
        frames.append(frame.image)
        state = init_state_from_frames(predictor, frames, frame)
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.asarray(box, dtype=np.float32))
        track = cls(predictor, state, frames, frame.width, frame.height)
        logits = track._propagate(0)
        track._release_frame()
        return track, logits

    def step(self, frame: Frame) -> np.ndarray:
        """The next frame: memory attention and the mask decoder on its (shared) encoding; its mask logits (H x W)."""
        if (frame.width, frame.height) != (self.width, self.height):
            raise TrackingError(f"this frame is {frame.width}x{frame.height} but tracking started on a {self.width}x{self.height} frame")
        index = self.frames.append(frame.image)
        self.state["num_frames"] = stream_length(self.predictor, len(self.frames))
        self.state["cached_features"] = frame.feature_cache(index)
        logits = self._propagate(index)
        self._forget_before(index)
        self._release_frame()
        self.touched = time.monotonic()
        return logits

    def _propagate(self, index: int) -> np.ndarray:
        out = None
        for _, _, video_res_masks in self.predictor.propagate_in_video(self.state, start_frame_idx=index, max_frame_num_to_track=0):
            out = video_res_masks
        return out[0, 0].float().cpu().numpy()

    def _forget_before(self, index: int) -> None:
        """Drop what SAM 2 never reads again: outputs older than its memory window, and feature caches."""
        model = self.predictor
        window = max(model.num_maskmem, model.max_obj_ptrs_in_encoder if model.use_obj_ptrs_in_encoder else 0)
        for obj_output in self.state["output_dict_per_obj"].values():
            old = [t for t in obj_output["non_cond_frame_outputs"] if t < index - window]
            for t in old:
                del obj_output["non_cond_frame_outputs"][t]
        for tracked in self.state["frames_tracked_per_obj"].values():
            for t in [t for t in tracked if t < index - window and t != 0]:
                del tracked[t]

    def _release_frame(self) -> None:
        """Between calls a session needs neither the frame's pixels nor its image features (the next call brings
        its own frame): dropping them keeps an idle session to SAM 2's per-frame outputs."""
        self.state["cached_features"] = {}
        self.frames.newest = None


def stream_length(predictor: Any, frames_seen: int) -> int:
    """The video length SAM 2 is told. Offline, track_step spaces the object pointers' temporal encoding over
    min(num_frames, max_obj_ptrs_in_encoder) (sam2_base.py, _prepare_memory_conditioned_features); a stream
    does not know its length, so it is taken as at least that window: identical to the offline predictor
    for any video of 16 frames or more (the default window), the case tracking is for."""
    return max(frames_seen, predictor.max_obj_ptrs_in_encoder)


def init_state_from_frames(predictor: Any, frames: Frames, frame: Frame) -> dict:
    """``SAM2VideoPredictor.init_state`` without loading a video: the same keys, over a growing Frames
    (sam2/sam2_video_predictor.py, init_state, sam2 1.1.0), with the first frame's encoding when it has one."""
    device = predictor.device
    state: dict[str, Any] = {
        "images": frames, "num_frames": stream_length(predictor, len(frames)), "offload_video_to_cpu": False,
        "offload_state_to_cpu": False, "video_height": frame.height, "video_width": frame.width, "device": device,
        "storage_device": device, "point_inputs_per_obj": {}, "mask_inputs_per_obj": {},
        "cached_features": frame.feature_cache(0), "constants": {}, "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(), "obj_ids": [], "output_dict_per_obj": {}, "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    predictor._get_image_feature(state, frame_idx=0, batch_size=1)
    return state


class Sessions:
    """Tracks by session id, bounded by idle age, by a quota per caller and by a global count.

    Who the caller is. CVAT v2.51.0 tells a function nothing about who calls it (cvat/apps/lambda_manager/views.py
    at commit dfd505e7): ``LambdaFunction.invoke`` starts the payload empty (line 311) and, for a tracker, puts in
    only ``image``, ``shapes`` and ``states`` (lines 491-550; ``threshold`` too when one is given, 325-327); the
    user, the job and the task it receives (``FunctionViewSet.call``, 1283-1317, reads ``job``/``task`` from the
    request) serve to check permissions, fetch the frame and fire a signal (558), never reach the payload. The
    headers name the function, not the caller: ``LambdaGateway._http`` adds only Nuclio routing headers
    (``x-nuclio-project-name``, ``-function-namespace``, ``-invoke-via``, ``X-Nuclio-Invoke-Timeout``, 89-94;
    ``x-nuclio-function-name`` and ``x-nuclio-path`` via the dashboard, 133-139), the direct path posts the bare
    JSON (150), and ``make_requests_session`` sets one User-Agent, ``CVAT/<version> python-requests/...``, for
    everyone (cvat/utils/http.py, same commit, lines 11 and 26-29). Every request comes from CVAT's server, so
    the peer address is the same for all users too.

    So the caller is keyed by the one thing that does tell callers apart: which sessions travel together. CVAT's
    web UI sends, per tracker, one ``init_tracking`` call with the shapes of all the objects it starts and then
    one ``track`` call per frame with the states of all the objects it follows (cvat-ui/src/components/
    annotation-page/standard-workspace/controls-side-bar/tools-control.tsx at dfd505e7, lines 784-789 and
    832-837). A caller here is such a tracking run: the sessions started by one call form one caller, and a
    call that steps sessions of several callers merges them into one (the UI's init call and its next track
    call thus become one caller). This is the most defensible key CVAT allows; it cannot stop a client that
    deliberately splits itself into many runs (nothing in the request can), which the per-call cap, the
    quota and the single model worker (one call at a time) keep slow and small.

    The bounds, applied when a call's sessions are committed:

    - a caller holds at most ``per_caller`` sessions: past it, its own least recently used ones go first;
    - all callers together hold at most ``max_sessions``: past it, the caller holding the most sessions loses
      its least recently used one (among equals, the caller idle longest), and the sessions of the call being
      answered are never taken. A caller's most recent session is therefore taken only when every caller with
      sessions outside this call is down to one, and then the one idle longest;
    - a session idle for ``ttl_seconds`` is dropped.
    """

    def __init__(self, max_sessions: int, ttl_seconds: float, per_caller: int | None = None) -> None:
        self.max_sessions, self.ttl = max_sessions, ttl_seconds
        self.per_caller = max_sessions if per_caller is None else per_caller
        self._tracks: OrderedDict[str, Track] = OrderedDict()  # least recently used first
        self._caller: dict[str, str] = {}  # session -> the caller (tracking run) it belongs to
        self._lock = threading.Lock()

    def add(self, track: Track) -> str:
        """One new session, a caller of its own."""
        return self.commit((), [track])[0]

    def commit(self, stepped: Iterable[str], started: list[Track]) -> list[str]:
        """After a call: the sessions it stepped and those it started become one caller; the new sessions' ids."""
        with self._lock:
            self._expire()
            stepped = [s for s in stepped if s in self._tracks]
            callers = {self._caller[s] for s in stepped}
            caller = self._caller[stepped[0]] if stepped else secrets.token_hex(8)
            for session, owner in self._caller.items():
                if owner in callers:
                    self._caller[session] = caller
            new = []
            for track in started:
                session = secrets.token_hex(16)
                self._tracks[session], self._caller[session] = track, caller
                new.append(session)
            for session in stepped:
                self._tracks.move_to_end(session)
            protected = set(stepped) | set(new)
            while sum(1 for owner in self._caller.values() if owner == caller) > self.per_caller:
                victim = next((s for s in self._tracks if self._caller[s] == caller and s not in protected), None)
                if victim is None:
                    break
                self._drop(victim)
            while len(self._tracks) > self.max_sessions:
                victim = self._victim(protected)
                if victim is None:
                    break
                self._drop(victim)
            return new

    def get(self, session: str) -> Track:
        with self._lock:
            self._expire()
            track = self._tracks.get(session)
            if track is None:
                raise SessionGone("this tracking session is unknown or has expired: restart tracking from the current frame")
            self._tracks.move_to_end(session)
            return track

    def callers(self) -> dict[str, int]:
        """Sessions held per caller."""
        with self._lock:
            return dict(Counter(self._caller.values()))

    def caller_of(self, session: str) -> str | None:
        return self._caller.get(session)

    def __len__(self) -> int:
        return len(self._tracks)

    def _victim(self, protected: set[str]) -> str | None:
        """The least recently used session of the caller holding the most (among equals, the one idle longest)."""
        held = Counter(self._caller.values())
        last_use: dict[str, int] = {}
        oldest: dict[str, str] = {}
        for position, session in enumerate(self._tracks):
            owner = self._caller[session]
            last_use[owner] = position
            if session not in protected:
                oldest.setdefault(owner, session)
        if not oldest:
            return None
        return oldest[max(oldest, key=lambda owner: (held[owner], -last_use[owner]))]

    def _drop(self, session: str) -> None:
        del self._tracks[session], self._caller[session]

    def _expire(self) -> None:
        now = time.monotonic()
        for session in [s for s, t in self._tracks.items() if now - t.touched > self.ttl]:
            self._drop(session)


class Tracker:
    """The model (loaded once per worker) and the sessions of the shapes it follows."""

    def __init__(self, predictor: Any, sessions: Sessions, max_shapes: int = DEFAULT_MAX_SHAPES) -> None:
        self.predictor, self.sessions, self.max_shapes = predictor, sessions, max_shapes
        self.lock = threading.Lock()  # one call at a time through the model

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Tracker:
        env = os.environ if environ is None else environ
        max_sessions = int(env.get("SAM2_TRACKER_MAX_SESSIONS", str(DEFAULT_MAX_SESSIONS)))
        max_shapes = int(env.get("SAM2_TRACKER_MAX_SHAPES", str(DEFAULT_MAX_SHAPES)))
        if not 1 <= max_shapes <= max_sessions:
            raise ValueError(f"SAM2_TRACKER_MAX_SHAPES ({max_shapes}) must be from 1 to SAM2_TRACKER_MAX_SESSIONS ({max_sessions})")
        from sam2.build_sam import build_sam2_video_predictor

        checkpoint, config, device = model_settings(env)
        predictor = build_sam2_video_predictor(config, str(checkpoint), device=str(device))
        sessions = Sessions(max_sessions, float(env.get("SAM2_TRACKER_SESSION_TTL", str(DEFAULT_SESSION_TTL))), per_caller=max_shapes)
        return cls(predictor, sessions, max_shapes)

    def track(self, encoded: bytes, requests: list[tuple[float, float, float, float] | str]) -> list[tuple[str, np.ndarray]]:
        """One call: per shape, a box to start from or the session of a track to step; (session, mask logits) each.
        The frame is decoded and run through the image encoder once, whatever the number of shapes. The sessions
        it starts are stored only once the whole call succeeded, together with those it stepped (one caller)."""
        tracks = []
        for number, request in enumerate(requests, start=1):
            if isinstance(request, str):
                try:
                    tracks.append(self.sessions.get(request))
                except SessionGone as exc:
                    raise SessionGone(f"shape {number}: {exc}") from None
            else:
                tracks.append(None)
        results: list[tuple[str | None, np.ndarray]] = []
        started: list[Track] = []
        with self.lock, torch.inference_mode(), autocast(self.predictor.device):
            frame = Frame.decode(self.predictor, encoded)
            frame.encode(self.predictor)
            for number, (request, track) in enumerate(zip(requests, tracks, strict=True), start=1):
                if track is None:
                    track, logits = Track.start(self.predictor, frame, request)
                    started.append(track)
                    results.append((None, logits))
                    continue
                try:
                    results.append((request, track.step(frame)))
                except TrackingError as exc:
                    raise type(exc)(f"shape {number}: {exc}") from None
            new = iter(self.sessions.commit([r for r in requests if isinstance(r, str)], started))
        return [(next(new) if session is None else session, logits) for session, logits in results]


def autocast(device: torch.device):
    """bfloat16 on CUDA as sam2's own video notebook runs it; full precision on the CPU (what the tests compare)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)

