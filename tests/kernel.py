"""A real IPython kernel driven through jupyter_client, for tests that restart kernels."""

from __future__ import annotations

import faulthandler
import io
import os
import queue
import signal
import sys
import tempfile
import time

from jupyter_client.manager import KernelManager


class KernelError(AssertionError):
    pass


class Kernel:
    """Start a real kernel (this venv's python), run code in it, restart it, shut it down."""

    def __init__(self, cwd: str, env: dict | None = None):
        self.km = KernelManager(kernel_name="python3")
        self.km.kernel_spec.argv[0] = sys.executable  # the venv's python, not whatever is on PATH
        self.cwd, self.env = cwd, {**os.environ, **(env or {})}
        self.kc = None

    def start(self) -> Kernel:
        self.km.start_kernel(cwd=self.cwd, env=self.env)
        self._connect()
        self._arm_stack_dump()
        return self

    @property
    def _stack_file(self) -> str:
        return os.path.join(tempfile.gettempdir(), f"gft-kernel-{self.pid}.stacks")

    def _arm_stack_dump(self) -> None:
        """SIGUSR1 makes the kernel write every thread's stack to a file (faulthandler, so it
        works while a thread holds the GIL): what a cell that never finishes is waiting on."""
        self.execute("import faulthandler as _fh, signal as _sig\n"
                     f"_fh_file = open({self._stack_file!r}, 'w')\n"
                     "_fh.register(_sig.SIGUSR1, file=_fh_file, all_threads=True)", timeout=60)

    def stacks(self) -> str:
        """The kernel's threads as they are now, and this test process's (for a timeout's report)."""
        try:
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(2)
            with open(self._stack_file) as f:
                kernel = f.read()
        except OSError as e:
            kernel = f"(no dump: {e})"
        buf = io.StringIO()
        try:
            faulthandler.dump_traceback(file=buf, all_threads=True)
        except (ValueError, io.UnsupportedOperation):  # faulthandler needs a real file descriptor
            with tempfile.TemporaryFile("w+") as f:
                faulthandler.dump_traceback(file=f, all_threads=True)
                f.seek(0)
                buf.write(f.read())
        return f"--- kernel {self.pid} threads ---\n{kernel}\n--- test process threads ---\n{buf.getvalue()}"

    def _connect(self, timeout: float = 120) -> None:
        """A new client on the kernel. Not jupyter_client's wait_for_ready: it waits for IOPub
        to fall quiet, which a panel updating several times a second delays for long. A
        kernel_info reply proves the shell channel, and any IOPub message (its status ones
        included) proves the subscription."""
        if self.kc is not None:
            self.kc.stop_channels()
        kc = self.km.client()
        kc.start_channels()
        kc.kernel_info(reply=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            kc.kernel_info()
            try:
                kc.get_iopub_msg(timeout=1)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError("the kernel's IOPub channel never answered") from None
        self.kc = kc

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def execute(self, code: str, timeout: float = 120) -> dict:
        """Run `code`; return {'stdout', 'stderr', 'result'}; raise KernelError on an error."""
        msg_id = self.kc.execute(code)
        out = {"stdout": "", "stderr": "", "result": None}
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"kernel did not finish in {timeout}s: {code[:200]}\n{self.stacks()}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind == "execute_result":
                out["result"] = content["data"].get("text/plain")
            elif kind == "error":
                raise KernelError("\n".join(content["traceback"]) + "\n" + out["stderr"])
            elif kind == "status" and content["execution_state"] == "idle":
                return out

    def eval(self, expr: str, timeout: float = 120):
        """The value of a Python expression in the kernel (through repr/literal_eval)."""
        import ast

        out = self.execute(f"print(repr({expr}))", timeout=timeout)
        return ast.literal_eval(out["stdout"].strip().splitlines()[-1])

    def restart(self) -> None:
        """What the Restart Kernel button does: the old process (and its group) is killed."""
        self.km.restart_kernel(now=True)
        self._connect()
        self._arm_stack_dump()

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def shutdown(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)
