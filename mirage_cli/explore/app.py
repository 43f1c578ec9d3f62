"""``mirage explore``'s web app: a viser page over one :class:`~.session.ExploreSession`.

viser (https://github.com/nerfstudio-project/viser) serves its prebuilt client from the installed
package (``viser/client/build/index.html``: no CDN) and gives the 3D viewport, the GUI panel and
the hotkeys (``GuiApi.add_command(hotkey=...)``); nothing here draws by hand.

The page shows the memory as a point cloud (colours from the codec's ``latent_to_rgb``), a frustum
per generated latent frame and the current camera (red), the latest chunk as a video, the known
fraction of the current view, the backend and the timings, a progress bar and the messages (every
refusal or error as one line, never a traceback). Moves (buttons and keys W/S/A/D/Q/E/R/F, U undo,
"Go here", a preset) become jobs run in order by one worker thread -- one generation at a time;
"Cancel" stops the running chunk and drops the queued ones together. A client that goes away
changes nothing: the chunk finishes and is saved; the next page sees it.

Coordinates: the scene is in the run's scene units, frame 0's camera at the origin, OpenCV axes
(y down: the viewer's up direction is ``-y``); viser's cameras and frustums use the same OpenCV
camera convention (+z forward, +y down).
"""

from __future__ import annotations

import base64
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MirageError
from ..pipeline.config import GenerateConfig
from ..pipeline.engine import Cancelled, CancelToken
from ..pipeline.rundir import chunk_video
from ..trajectories.catalog import CATALOG
from .moves import KEY_HELP, KEYS, Step
from .session import DEFAULT_ANGLE, ExploreSession
from .uploads import accept_depth, accept_image

MAX_POINTS = 200_000
"""Most memory points sent to the page (evenly subsampled above)."""
QUEUE_LIMIT = 8
"""Most steps waiting behind the running one; more are refused with a message."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ExploreOptions:
    """What ``mirage explore`` was given. cfg: the generation options (``image`` may be None: the page
    asks for an upload). resume: a session directory to continue. distance: step length in reference
    depths (None: from the input depth). angle: turn per step, degrees. uploads: where uploads are saved."""

    cfg: GenerateConfig
    host: str = "127.0.0.1"
    port: int = 7860
    resume: Path | None = None
    distance: float | None = None
    angle: float = DEFAULT_ANGLE
    uploads: Path | None = None


def host_warning(host: str) -> str | None:
    """The warning for a server reachable from other machines."""
    if host in LOCAL_HOSTS:
        return None
    return (f"--host {host}: the explorer is reachable from other machines on this network; anyone who reaches it can "
            "generate and write into the run directory (use the default 127.0.0.1 unless you mean it)")


def pose_to_viser(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(4, 4)`` OpenCV c2w -> viser's ``(wxyz, position)``."""
    import viser.transforms as tf

    return tf.SO3.from_matrix(c2w[:3, :3]).wxyz, c2w[:3, 3]


def viser_to_pose(wxyz, position) -> np.ndarray:
    """viser's camera ``(wxyz, position)`` -> ``(4, 4)`` OpenCV c2w."""
    import viser.transforms as tf

    out = np.eye(4)
    out[:3, :3] = tf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    out[:3, 3] = np.asarray(position, dtype=np.float64)
    return out


def set_value(handle: Any, value: Any) -> None:
    """Assign a viser GUI input's ``value``. viser 1.1 declares ``_GuiInputHandle.value``'s setter after another
    method (``viser/_gui_handles.py``), so type checkers see the property as read-only; the setter is there."""
    handle.value = value


def on_event(action: Callable[[], None]) -> Callable[[Any], None]:
    """A viser event handler (click, hotkey, upload) that runs ``action`` and ignores the event."""
    return lambda _event: action()


class ExploreApp:
    """The server, its page and its one worker (see the module docstring). ``session`` may be None
    (no IMAGE given): the page then waits for an uploaded image."""

    def __init__(self, opts: ExploreOptions, session: ExploreSession | None, log: Callable[[str], None] = print) -> None:
        import viser

        self.opts, self.session, self.log = opts, session, log
        self.jobs: queue.Queue = queue.Queue()
        self.token = CancelToken()
        self.pending = 0  # queued jobs not yet started (for the page)
        self.lock = threading.Lock()  # guards token / pending
        self.frustums: list = []
        self.depth_upload: Path | None = None
        self.server = viser.ViserServer(host=opts.host, port=opts.port, label="mirage explore", verbose=False)
        self.server.scene.set_up_direction("-y")
        self._build_gui()
        self.worker = threading.Thread(target=self._work, name="mirage-explore-worker", daemon=True)
        self.worker.start()
        self.server.on_client_connect(self._on_connect)
        self._show()

    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.server.get_port()}"

    # ------------------------------------------------------------------------------------ the page
    def _build_gui(self) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown("starting")
        self.progress = gui.add_progress_bar(0.0, animated=False)
        self.message = gui.add_markdown("")
        with gui.add_folder("Move"):
            self.buttons = {}
            for row in (("W", "S"), ("A", "D"), ("Q", "E"), ("R", "F")):
                for key in row:
                    b = gui.add_button(f"{key}: {KEY_HELP[key]}")
                    b.on_click(on_event(partial(self._request_key, key)))
                    self.buttons[key] = b
            self.undo_button = gui.add_button("U: undo")
            self.undo_button.on_click(lambda _e: self._enqueue("undo", self._undo))
            self.goto_button = gui.add_button("Go here (fly to this view)")
            self.goto_button.on_click(self._request_goto)
            self.cancel_button = gui.add_button("Cancel", color="red")
            self.cancel_button.on_click(lambda _e: self.cancel())
        for key in KEYS:  # keyboard: viser's hotkeys (commands), same jobs as the buttons
            gui.add_command(f"{key}: {KEY_HELP[key]}", hotkey=key).on_trigger(on_event(partial(self._request_key, key)))
        gui.add_command("U: undo", hotkey="U").on_trigger(lambda _e: self._enqueue("undo", self._undo))
        with gui.add_folder("Step"):
            d = self.session.default_distance() if self.session is not None else 0.1
            self.distance = gui.add_number("Step length (reference depths)", self.opts.distance or d, min=1e-4, max=100.0,
                                           step=0.01)
            self.angle = gui.add_number("Turn (degrees)", self.opts.angle, min=0.1, max=180.0, step=1.0)
            self.prompt = gui.add_text("Prompt (next chunk)", self.opts.cfg.prompt)
            self.prompt.on_update(lambda _e: self._prompt_changed())
            self.preset = gui.add_dropdown("Preset", tuple(CATALOG), initial_value="orbit_left" if "orbit_left" in CATALOG
                                           else tuple(CATALOG)[0])
            self.preset_button = gui.add_button("Run preset as next chunk")
            self.preset_button.on_click(lambda _e: self._enqueue(f"preset {self.preset.value}", lambda t: self._step(
                Step("preset", preset=self.preset.value, prompt=self._prompt()), t)))
        with gui.add_folder("Input"):
            self.upload_image = gui.add_upload_button("Upload image", mime_type="image/*")
            self.upload_image.on_upload(lambda _e: self._uploaded("image"))
            self.upload_depth = gui.add_upload_button("Upload depth (.npy)", mime_type="*/*")
            self.upload_depth.on_upload(lambda _e: self._uploaded("depth"))
        self.video = gui.add_html("")

    def _on_connect(self, client) -> None:
        """A new page looks at the current camera from a little behind it."""
        if self.session is None:
            return
        c2w = self.session.plan.cams.c2w[-1].numpy() if len(self.session.plan.cams) else np.eye(4)
        ref = self.session.plan.reference_depth
        fwd, up = c2w[:3, 2], -c2w[:3, 1]
        client.camera.position = c2w[:3, 3] - 0.6 * ref * fwd + 0.15 * ref * up
        client.camera.look_at = c2w[:3, 3] + ref * fwd
        client.camera.up_direction = up

    def say(self, text: str, error: bool = False) -> None:
        """One line in the page's message area (and on the console)."""
        self.message.content = (f"**{'error' if error else 'note'}:** {text}" if text else "")
        if text:
            self.log(("error: " if error else "") + text)

    def _prompt(self) -> str | None:
        return self.prompt.value

    def _prompt_changed(self) -> None:
        text = self.prompt.value
        session = self.session
        if not text.strip():
            self.say("empty prompt: the next chunks have no text prompt")
        elif session is not None and not session.engine.backend.spec.samples:
            self.say(f"prompt kept for the next chunk; the {session.engine.backend.spec.name} backend takes no prompt "
                     "(a neural backend will when the path is rendered again)")

    # ------------------------------------------------------------------------------------ requests
    def _request_key(self, key: str) -> None:
        step = Step("key", key=key, distance=float(self.distance.value), angle=float(self.angle.value),
                    prompt=self._prompt())
        self._enqueue(step.describe(), lambda t: self._step(step, t))

    def _request_goto(self, event) -> None:
        session = self.session
        if session is None or event.client is None:
            self.say("go here: no session or no view yet", error=True)
            return
        c2w = viser_to_pose(event.client.camera.wxyz, event.client.camera.position)
        c2w[:3, 3] /= session.plan.reference_depth  # scene units -> reference depths (the trajectory's units)
        step = Step("goto", target=tuple(map(tuple, c2w.tolist())), prompt=self._prompt())
        self._enqueue("go here", lambda t: self._step(step, t))

    def _enqueue(self, what: str, job: Callable[[CancelToken], None]) -> None:
        with self.lock:
            if self.pending >= QUEUE_LIMIT:
                self.say(f"{what}: {self.pending} steps are already waiting; wait or cancel", error=True)
                return
            self.pending += 1
            token = self.token
        self.jobs.put((what, job, token))
        self._show_status()

    def cancel(self) -> None:
        """Stop the running chunk and drop every queued step (they were asked together)."""
        with self.lock:
            busy = self.pending or self.running
            self.token.cancel()
            self.token = CancelToken()
        self.say("cancelled: the running chunk stops and queued steps are dropped" if busy else "nothing to cancel")

    # ------------------------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while True:
            item = self.jobs.get()
            if item is None:
                return
            what, job, token = item
            with self.lock:
                self.pending -= 1
                if token.cancelled:
                    continue
                self.running = what
            try:
                set_value(self.progress, 2.0)
                self.progress.animated = True
                job(token)
            except Cancelled:
                self.say(f"{what}: cancelled; the session is as before it")
            except MirageError as e:
                self.say(f"{what}: {e}", error=True)
            except Exception as e:  # a bug: said in one line on the page, the traceback on the console
                self.log(traceback.format_exc())
                self.say(f"{what}: {type(e).__name__}: {e}", error=True)
            finally:
                self.running = None
                set_value(self.progress, 100.0)
                self.progress.animated = False
                try:
                    self._show()
                except Exception:  # the page must not take the worker down
                    self.log(traceback.format_exc())

    running: str | None = None

    def _need_session(self) -> ExploreSession:
        if self.session is None:
            raise MirageError("no input yet: upload an image first")
        return self.session

    def _step(self, step: Step, token: CancelToken) -> None:
        session = self._need_session()

        def progress(i: int, n: int) -> None:
            set_value(self.progress, 5.0 + 90.0 * i / max(n, 1))

        t = time.perf_counter()
        result = session.step(step, cancel=token, progress=progress)
        self.say(f"{step.describe()}: chunk {result.chunk.index} in {time.perf_counter() - t:.1f} s")

    def _undo(self, _token: CancelToken) -> None:
        left = self._need_session().undo()
        self.say(f"undo: {left} chunk(s) left")

    # ------------------------------------------------------------------------------------ uploads
    def _uploaded(self, kind: str) -> None:
        file = (self.upload_image if kind == "image" else self.upload_depth).value
        if file is not None:
            self.upload(kind, file.name, file.content)

    def upload(self, kind: str, name: str, content: bytes) -> None:
        """An uploaded ``"image"`` or ``"depth"`` (bytes; ``name`` is only shown): checked, saved under
        the uploads folder, then a new session with it is queued (before the first chunk only)."""
        try:
            folder = self.opts.uploads or Path("outputs") / "explore-uploads"
            saved = (accept_image if kind == "image" else accept_depth)(name, content, folder)
        except MirageError as e:
            self.say(str(e), error=True)
            return
        if kind == "depth":
            self.depth_upload = saved
        self._enqueue(f"upload {name}", lambda _t: self._restart(saved if kind == "image" else None))

    def idle(self) -> bool:
        """No step running or waiting."""
        with self.lock:
            return self.pending == 0 and self.running is None and self.jobs.empty()

    def _restart(self, image: Path | None) -> None:
        """A new session with an uploaded image and/or depth (only before the first chunk: a session
        with chunks is a run the upload would destroy)."""
        old = self.session
        if old is not None and old.chunks_done:
            raise MirageError(f"the session in {old.out} has {old.chunks_done} chunk(s); undo them all (U) to change its "
                              "input, or start mirage explore with another --out")
        base = old.run.record.config if old is not None else self.opts.cfg
        cfg = replace(self.opts.cfg, image=str(image) if image else base.image,
                      depth=str(self.depth_upload) if self.depth_upload else self.opts.cfg.depth,
                      out=str(old.out) if old is not None else self.opts.cfg.out, overwrite=True)
        if not cfg.image:
            self.say("depth kept: it is used with the next uploaded image")
            return
        if old is not None:
            old.finish()
        try:
            self.session = ExploreSession.create(cfg, warn=lambda m: self.say(m))
        except BaseException:
            self.depth_upload = None  # a refused depth is not kept for the next image
            self.session = None
            if old is not None:  # the previous input again (it had no chunk: nothing is lost)
                self.session = ExploreSession.create(replace(self.opts.cfg, image=old.run.record.config.image,
                                                             out=str(old.out), overwrite=True), warn=lambda m: None)
            raise
        self.say(f"new input {Path(cfg.image).name}: session in {self.session.out}")
        set_value(self.distance, self.session.default_distance())

    # ------------------------------------------------------------------------------------ the view
    def _show_status(self) -> None:
        s = self.session
        if s is None:
            self.status.content = "**mirage explore** — upload an image to start"
            return
        last = s.last
        spec = s.engine.backend.spec
        known = self.known_fraction(s)
        lines = [f"**mirage explore** — `{s.out}`",
                 f"backend **{spec.name}**{' (' + spec.label + ')' if spec.label else ''} · chunk {s.chunk_length} frames · "
                 f"{s.chunks_done} chunk(s) · {len(s.plan.cams)} frame(s) · {len(s.engine.memory):,} memory points",
                 f"known fraction of the current view: **{known:.1%}**"]
        if last is not None:
            secs = " · ".join(f"{k} {v:.2f} s" for k, v in last.seconds.items())
            lines.append(f"last chunk {last.chunk.index}: known {last.known_fraction:.1%} · {secs}")
        running, pending = self.running, self.pending
        if running:
            lines.append(f"generating: {running}" + (f" · {pending} queued" if pending else ""))
        elif pending:
            lines.append(f"{pending} queued")
        self.status.content = "  \n".join(lines)

    @staticmethod
    def known_fraction(s: ExploreSession) -> float:
        """Fraction of the latent cells the memory covers from the current camera (the next chunk's frame 0)."""
        cam = s.plan.cams[len(s.plan.cams) - 1]
        _, known, _ = s.engine.memory.read(cam)
        return float(known.float().mean())

    def _show(self) -> None:
        """Send the session's state to the page: points, frustums, current camera, latest chunk."""
        self._show_status()
        s = self.session
        if s is None:
            return
        scene, mem = self.server.scene, s.engine.memory
        pts = mem.points.float().cpu().numpy()
        cols = s.engine.codec.latent_to_rgb(mem.features.float().cpu()).float().clamp(0, 1).numpy()
        if len(pts) > MAX_POINTS:
            idx = np.linspace(0, len(pts) - 1, MAX_POINTS).astype(np.int64)
            pts, cols = pts[idx], cols[idx]
        ref = s.plan.reference_depth
        scene.add_point_cloud("/memory", pts, (cols * 255).astype(np.uint8), point_size=0.006 * ref)
        for h in self.frustums:
            h.remove()
        self.frustums = []
        cams = s.plan.cams
        W, H = s.plan.size
        fov = cams.fov_y_deg.numpy()
        tf = s.engine.codec.temporal_factor
        for i in range(0, len(cams) - 1, tf):
            wxyz, pos = pose_to_viser(cams.c2w[i].numpy())
            self.frustums.append(scene.add_camera_frustum(f"/path/{i}", np.radians(fov[i]), W / H, scale=0.08 * ref,
                                                          wxyz=wxyz, position=pos, color=(60, 110, 220)))
        wxyz, pos = pose_to_viser(cams.c2w[-1].numpy())
        scene.add_camera_frustum("/current", np.radians(fov[-1]), W / H, scale=0.14 * ref, wxyz=wxyz, position=pos,
                                 color=(230, 40, 40))
        self._show_video(s)

    def _show_video(self, s: ExploreSession) -> None:
        k = s.chunks_done
        if not k:
            self.video.content = "<p>no chunk yet: press W (or another move)</p>"
            return
        path = chunk_video(s.out, k - 1)
        data = base64.b64encode(path.read_bytes()).decode()
        self.video.content = (f'<p>chunk {k - 1}</p><video style="width:100%" controls autoplay loop muted playsinline '
                              f'src="data:video/mp4;base64,{data}"></video>')

    # ------------------------------------------------------------------------------------ the end
    def close(self) -> None:
        """Stop the worker (the running chunk is cancelled), finish the session, stop the server."""
        with self.lock:
            self.token.cancel()  # the running chunk stops (rolled back); queued ones are dropped
        self.jobs.put(None)
        self.worker.join()
        try:
            if self.session is not None:
                self.session.finish()
        finally:
            self.server.stop()
