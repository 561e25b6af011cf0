"""``python -m edge.demo``: live classification from a camera, a video, a folder of images or a stream.

    python -m edge.demo --source 0                      # webcam, window, bundled int8 model
    python -m edge.demo --source clip.mp4 --headless --output annotated.mp4 --json summary.json

Capture and inference run in separate threads; inference always takes the newest frame and frames it
never saw are dropped and counted, so the picture never lags behind the camera. Probabilities are
smoothed over time (exponential moving average, ``--smoothing 0`` turns it off) so labels do not flicker.
At the end it prints frames read / classified / dropped, latency median and p90 and end-to-end FPS.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import UsageError, UserError

log = logging.getLogger(__name__)


class SourceError(UserError):
    """A camera, file or stream that cannot be opened; the message says what to check."""


class FrameSource:
    """Frames from a webcam index, a video file, a stream URL or a folder of images (BGR uint8)."""

    def __init__(self, spec: str, realtime: bool = False):
        import cv2

        from edge.preprocessing import list_images

        from edge.quiet import captured_fds

        self.spec, self.realtime, self.files, self.cap = spec, realtime, None, None
        self.fps = 30.0
        path = Path(spec)
        if spec.isdigit():
            with captured_fds():  # OpenCV's V4L2/FFmpeg warnings; the error below says what happened
                self.cap = cv2.VideoCapture(int(spec))
            if not self.cap.isOpened():
                raise SourceError(f"camera {spec} not found or busy; list cameras with `v4l2-ctl --list-devices` "
                                  "or pass --source FILE.mp4")
            self.realtime = False  # a camera paces itself
        elif path.is_dir():
            self.files = list_images(path)
            if not self.files:
                raise SourceError(f"{path}: folder has no images")
        elif "://" in spec or path.is_file():
            with captured_fds():
                self.cap = cv2.VideoCapture(spec)
            if not self.cap.isOpened():
                raise SourceError(f"{spec}: cannot open as a video or stream (unsupported codec or unreachable)")
            fps = self.cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and fps > 0 else 30.0
        else:
            raise SourceError(f"{spec}: no such camera index, file, folder or URL")

    def frames(self):
        import cv2

        period = 1.0 / self.fps
        start = time.perf_counter()
        if self.files is not None:
            for i, f in enumerate(self.files):
                img = cv2.imread(str(f))
                if img is None:
                    log.warning("skipping unreadable image %s", f)
                    continue
                yield img
            return
        i = 0
        while True:
            ok, frame = self.cap.read()
            if not ok:
                if i == 0:
                    raise SourceError(f"{self.spec}: no frame could be read (empty or corrupt video)")
                return
            if self.realtime:  # play a file at its own frame rate, like a camera would deliver it
                delay = start + i * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            i += 1
            yield frame

    def close(self):
        if self.cap is not None:
            self.cap.release()


@dataclass
class Stats:
    read: int = 0
    classified: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)
    t0: float = 0.0
    t1: float = 0.0

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        wall = max(self.t1 - self.t0, 1e-9)
        labels = [t["label"] for t in self.timeline]
        top = max(set(labels), key=labels.count) if labels else None
        return {"frames_read": self.read, "frames_classified": self.classified, "frames_dropped": self.dropped,
                "latency_ms_median": float(np.median(lat)), "latency_ms_p90": float(np.percentile(lat, 90)),
                "classified_fps": self.classified / wall, "read_fps": self.read / wall, "wall_seconds": wall,
                "most_frequent_label": top, "most_frequent_share": labels.count(top) / len(labels) if labels else 0}


class Latest:
    """A one-slot mailbox: the producer overwrites, the consumer takes the newest (stale frames dropped)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.item = None
        self.index = -1
        self.done = False
        self.overwritten = 0

    def put(self, index: int, frame) -> None:
        with self.cond:
            if self.item is not None:
                self.overwritten += 1
            self.item, self.index = frame, index
            self.cond.notify()

    def take(self):
        with self.cond:
            while self.item is None and not self.done:
                self.cond.wait(0.5)
            item, index, self.item = self.item, self.index, None
            return index, item

    def finish(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()


def draw(frame, top3, latency_ms: float, fps: float):
    import cv2

    out = frame.copy()
    h = 22
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 420), h * 5), (0, 0, 0), -1)
    for i, p in enumerate(top3):
        cv2.putText(out, f"{p.label}: {100 * p.probability:.1f}%", (8, h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255) if i else (0, 255, 0), 1, cv2.LINE_AA)
    cv2.putText(out, f"{latency_ms:.1f} ms  {fps:.1f} FPS", (8, h * 4 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (0, 200, 255), 1, cv2.LINE_AA)
    return out


def default_demo_model() -> str:
    from edge.model.sources import default_model_path

    int8 = default_model_path().with_name(default_model_path().stem + "_int8.tflite")
    return str(int8 if int8.is_file() else default_model_path())


def run(source: str, model: str | None = None, headless: bool = False, output: str | None = None,
        smoothing: float = 0.6, max_frames: int = 0, threads: int = 2, realtime: bool = False,
        progress: bool = True) -> dict:
    import cv2

    from edge.labels import top_k
    from edge.preprocessing import preprocess
    from edge.runtime.runners import open_model

    if not 0 <= smoothing < 1:
        raise UsageError(f"--smoothing {smoothing}: use 0 (off) up to below 1")
    runner = open_model(model or default_demo_model(), threads=threads)
    src = FrameSource(source, realtime)
    if not headless:
        try:
            cv2.namedWindow("nasnet-edge", cv2.WINDOW_NORMAL)
        except cv2.error:
            raise SourceError("this OpenCV has no window support (opencv-python-headless); "
                              "pip install opencv-python, or run with --headless") from None
    box = Latest()
    stats = Stats()
    writer = None
    smoothed = None
    capture_error: list[BaseException] = []

    def capture():
        try:
            for i, frame in enumerate(src.frames()):
                if max_frames and i >= max_frames:
                    break
                stats.read += 1
                box.put(i, frame)
        except BaseException as e:  # reported by the main thread
            capture_error.append(e)
        finally:
            box.finish()

    stats.t0 = time.perf_counter()
    thread = threading.Thread(target=capture, name="capture", daemon=True)
    thread.start()
    try:
        while True:
            index, frame = box.take()
            if frame is None:
                break
            t = time.perf_counter()
            x = preprocess(frame, runner.preprocessing)[None]
            p = runner.probabilities(x)[0]
            lat = (time.perf_counter() - t) * 1000
            smoothed = p if smoothed is None or smoothing == 0 else smoothing * smoothed + (1 - smoothing) * p
            top3 = top_k(smoothed, runner.labels, 3)
            stats.classified += 1
            stats.latencies_ms.append(lat)
            stats.timeline.append({"frame": index, "label": top3[0].label, "probability": round(top3[0].probability, 4)})
            fps = stats.classified / max(time.perf_counter() - stats.t0, 1e-9)
            if output or not headless:
                shown = draw(frame, top3, lat, fps)
                if output:
                    if writer is None:
                        writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"mp4v"), src.fps,
                                                 (shown.shape[1], shown.shape[0]))
                        if not writer.isOpened():
                            raise SourceError(f"{output}: cannot write a video there")
                    writer.write(shown)
                if not headless:
                    cv2.imshow("nasnet-edge", shown)
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        break
    except KeyboardInterrupt:
        pass
    finally:
        stats.t1 = time.perf_counter()
        src.close()
        if writer is not None:
            writer.release()
        if not headless:
            cv2.destroyAllWindows()
    thread.join(timeout=5)
    if capture_error:
        raise capture_error[0]
    stats.dropped = box.overwritten
    summary = stats.summary()
    summary.update({"source": source, "model": str(runner.path), "runtime": runner.kind.value, "threads": threads,
                    "smoothing": smoothing, "realtime": realtime})
    return {"summary": summary, "timeline": stats.timeline}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="webcam index (0), video file, folder of images, or stream URL")
    p.add_argument("--model", default=None, help=".tflite, .pte or weights (default: the bundled int8 model)")
    p.add_argument("--headless", action="store_true", help="no window (servers, CI)")
    p.add_argument("--output", default=None, help="write the annotated video here (.mp4)")
    p.add_argument("--json", type=Path, default=None, help="write the summary and the top-1 label over time")
    p.add_argument("--smoothing", type=float, default=0.6, help="EMA factor for probabilities (0 = off)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames read")
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.add_argument("--realtime", action="store_true", help="play files at their frame rate, like a camera")
    return p


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        res = run(args.source, args.model, args.headless, args.output, args.smoothing, args.max_frames, args.threads,
                  args.realtime)
        s = res["summary"]
        print(f"frames read {s['frames_read']}, classified {s['frames_classified']}, dropped {s['frames_dropped']}; "
              f"latency median {s['latency_ms_median']:.1f} ms, p90 {s['latency_ms_p90']:.1f} ms; "
              f"{s['classified_fps']:.1f} classified FPS; most frequent label: {s['most_frequent_label']} "
              f"({100 * s['most_frequent_share']:.0f}% of frames)")
        if args.json:
            from converters.common import write_json_atomic

            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(args.json, res)
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
