"""Jupyter kernels for the runner: this interpreter's kernelspec, start (IPC), shared reset, stop, kill; a run's set."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError

KERNEL_NAME = "labkit"


def _same_interpreter(argv0: str) -> bool:
    if argv0 in {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        return True  # jupyter_client substitutes sys.executable for these
    a, b = Path(os.path.abspath(argv0)), Path(os.path.abspath(sys.executable))
    return a == b or (a.parent == b.parent and os.path.realpath(a) == os.path.realpath(b))


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """A kernelspec running *this* interpreter: the `labkit` one in sys.prefix (installed if missing)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def usable() -> bool:
        try:
            return _same_interpreter(KernelSpecManager().get_kernel_spec(name).argv[0])
        except NoSuchKernel:
            return False

    if usable():
        return name
    from ipykernel.kernelspec import install

    try:
        install(kernel_name=name, display_name="Python 3 (labkit)", prefix=sys.prefix)
    except OSError:
        pass
    if usable():
        return name
    # Shadowed by a user-level spec of the same name (or sys.prefix not writable): a private spec first on
    # JUPYTER_PATH for this process and its kernels.
    from ipykernel.kernelspec import write_kernel_spec

    from labkit.paths import cache_dir

    private = cache_dir() / "jupyter"
    write_kernel_spec(str(private / "kernels" / name), overrides={"display_name": "Python 3 (labkit)"})
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(private), os.environ.get("JUPYTER_PATH", "")]).rstrip(os.pathsep)
    if not usable():
        raise LabkitError(f"could not set up a Jupyter kernel for {sys.executable}")
    return name


def start_kernel(kernel: str, cwd: Path, **env: str):
    """Start a kernel (IPC transport: local sockets, no TCP ports) with cwd and extra environment variables."""
    import tempfile

    from jupyter_client.manager import KernelManager

    sockets = tempfile.mkdtemp(prefix="labkit-kernel-")  # short path: unix socket names are limited to ~100 chars
    km = KernelManager(kernel_name=kernel, transport="ipc", ip=os.path.join(sockets, "k"))
    # A fixed string-hash seed (unless the user set one): set iteration order, and so anything derived from
    # it, is then the same in every run.
    # The inline backend always: a caller's MPLBACKEND (Agg in tests) would silently drop every figure.
    inline = "module://matplotlib_inline.backend_inline"
    km.start_kernel(cwd=str(cwd), env={"PYTHONHASHSEED": "0", **os.environ, "MPLBACKEND": inline, **env})
    return km


def stop_kernel(km: Any, wait: bool = True) -> None:
    """Shut a kernel down. `wait=False` only asks (the kernel exits on its own while the next notebook starts);
    call `finish_kernel` later to reap it."""
    try:
        if km.has_kernel:
            if not wait:
                km.request_shutdown()
                return
            km.shutdown_kernel(now=False)
    except Exception:  # already dead or unreachable: make sure nothing is left behind
        with contextlib.suppress(Exception):
            km.shutdown_kernel(now=True)
    _cleanup(km)


def kill_kernel(km: Any) -> None:
    """Kill a kernel's process group at once, without jupyter_client's event loop (which an interrupt can leave
    holding half-finished tasks that would block)."""
    import signal

    proc = getattr(getattr(km, "provisioner", None), "process", None)
    if proc is not None:
        with contextlib.suppress(Exception):
            os.killpg(proc.pid, signal.SIGKILL)  # kernels run in their own session / process group
        with contextlib.suppress(Exception):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)
    _cleanup(km, loop=False)


def finish_kernel(km: Any, waittime: float = 10.0) -> None:
    """Reap a kernel asked to shut down with `stop_kernel(wait=False)` (killing it after `waittime`)."""
    with contextlib.suppress(Exception):
        if km.has_kernel:
            km.finish_shutdown(waittime=waittime)
    with contextlib.suppress(Exception):
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    _cleanup(km)


def _cleanup(km: Any, loop: bool = True) -> None:
    """Remove the kernel's connection file and sockets (`loop=False`: without jupyter_client's event loop)."""
    if loop:
        with contextlib.suppress(Exception):
            km.cleanup_resources()
    else:
        for method in ("cleanup_connection_file", "cleanup_ipc_files"):
            with contextlib.suppress(Exception):
                getattr(km, method)()
    with contextlib.suppress(OSError):
        folder = os.path.dirname(km.ip)
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


# Run in a shared kernel before each notebook: a clean namespace, fresh execution counts, this notebook's name.
_SHARED_RESET = """\
import os as _labkit_os, gc as _labkit_gc, sys as _labkit_sys
_labkit_os.environ["LABKIT_NOTEBOOK"] = {stem!r}
if "matplotlib.pyplot" in _labkit_sys.modules:
    _labkit_sys.modules["matplotlib.pyplot"].close("all")
get_ipython().run_line_magic("reset", "-f")
__import__("gc").collect()
get_ipython().execution_count = 1
"""


def prepare_shared_kernel(km: Any, stem: str, timeout: float = 120) -> None:
    """Make a kernel that ran earlier notebooks ready for `stem`: reset namespace and counters, set its name.

    Imported modules stay loaded, which is the point: torch, transformers, pandas ... are imported once.
    """
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=timeout)
        reply = kc.execute_interactive(_SHARED_RESET.format(stem=stem), silent=True, store_history=False,
                                       timeout=timeout)
        if reply["content"].get("status") != "ok":
            raise LabkitError(f"could not reset the shared kernel before {stem}: {reply['content'].get('evalue')}")
    finally:
        kc.stop_channels()


class KernelSession:
    """The kernels of one run, so the runner only asks for one per notebook and hands it back.

    Fresh mode (default): a new kernel per notebook; the one handed back is asked to exit and is reaped two
    notebooks later (it shuts down while the HTML is written and the next kernel starts). Shared mode: one
    kernel for the whole run, its namespace reset before each notebook (heavy imports are paid once). Notebooks
    running side by side (fresh mode) may call it from their own threads.
    """

    def __init__(self, name: str, cwd: Path, shared: bool = False, **env: str) -> None:
        self.name, self.cwd, self.shared, self.env = name, cwd, shared, env
        self._shared_km: Any = None
        self._stopping: list[Any] = []
        self._active: list[Any] = []  # kernels running a notebook now
        self._lock = threading.Lock()

    def acquire(self, stem: str) -> Any:
        """A kernel ready to run notebook `stem` (LABKIT_NOTEBOOK set to it)."""
        with self._lock:
            old = self._stopping[:-1]  # kernels from two notebooks ago: long gone by now
            del self._stopping[:-1]
        for km in old:
            finish_kernel(km)
        if self._shared_km is not None:
            prepare_shared_kernel(self._shared_km, stem)
            return self._shared_km
        km = start_kernel(self.name, self.cwd, **self.env, LABKIT_NOTEBOOK=stem)
        with self._lock:
            self._active.append(km)
        if self.shared:
            self._shared_km = km
        return km

    def release(self, km: Any) -> None:
        """After a notebook: a fresh kernel is asked to exit (reaped later); the shared one stays."""
        if not self.shared:
            stop_kernel(km, wait=False)
            with self._lock:
                if km in self._active:
                    self._active.remove(km)
                self._stopping.append(km)

    def kill(self, km: Any) -> None:
        """Ctrl-C or SIGTERM: the kernel goes now (its cell may run for hours)."""
        kill_kernel(km)
        with self._lock:
            if km in self._active:
                self._active.remove(km)
        if km is self._shared_km:
            self._shared_km = None

    def kill_all(self) -> None:
        """Ctrl-C or SIGTERM with notebooks side by side: every running kernel goes now."""
        with self._lock:
            active = list(self._active)
        for km in active:
            self.kill(km)

    def close(self, interrupted: bool = False) -> None:
        """Stop every kernel still around: reaped after a normal end, killed after an interrupt."""
        if self._shared_km is not None:
            stop_kernel(self._shared_km, wait=False)
            self._stopping.append(self._shared_km)
            self._shared_km = None
        for km in self._stopping:
            if interrupted:
                kill_kernel(km)
            else:
                finish_kernel(km)
        self._stopping.clear()
