"""Signal handlers hand their work to the relay thread: a signal that
lands while the main thread is writing a log line must not lose the
stack dump (nor raise inside the interrupted write)."""

from __future__ import annotations

import io
import logging
import os
import signal
import threading

import pytest

from nodepool.cmd.signals import SignalRelay
from nodepool.tests.functional.daemon_support import stack_dump
from nodepool.tests.helpers import wait_for


class SignalledMidWrite(io.StringIO):
    """A log stream that, like the C buffered writer under a file
    handler, refuses a write that starts while another write is in
    progress.  Its first write signals the process before it is done, so
    the handler runs while that write is in progress."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum
        self.signalled = False
        self.writing = False
        self.reentered = 0

    def write(self, text: str) -> int:
        if self.writing:
            self.reentered += 1
            raise RuntimeError("reentrant call inside the stream")
        self.writing = True
        try:
            if not self.signalled:
                self.signalled = True
                os.kill(os.getpid(), self.signum)
                # The handler runs at the next bytecode of this thread.
                for _ in range(1000):
                    pass
            return super().write(text)
        finally:
            self.writing = False


@pytest.fixture
def log_to():
    """Attach a stream to the root logger (INFO) for one test; the test
    runs on the main thread, where signal handlers are set."""
    if threading.current_thread() is not threading.main_thread():
        pytest.fail("signal handlers can only be set on the main thread")
    root = logging.getLogger()
    old_level = root.level
    old_handler = signal.getsignal(signal.SIGUSR2)
    handlers: list[logging.Handler] = []

    def attach(stream: io.StringIO) -> io.StringIO:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(threadName)s %(name)s %(message)s"))
        root.addHandler(handler)
        handlers.append(handler)
        root.setLevel(logging.INFO)
        return stream

    try:
        yield attach
    finally:
        signal.signal(signal.SIGUSR2, old_handler)
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(old_level)


def test_stack_dump_during_a_log_write_is_logged_by_the_relay(log_to):
    relay = SignalRelay()
    relay.start()
    signal.signal(signal.SIGUSR2, relay.dump_stacks)
    stream = log_to(SignalledMidWrite(signal.SIGUSR2))

    logging.getLogger("nodepool.test").info("a line the signal interrupts")

    threads = wait_for(lambda: stack_dump(stream.getvalue()), what="the stack dump")
    assert stream.reentered == 0
    text = stream.getvalue()
    assert "MainThread nodepool.test a line the signal interrupts" in text
    assert "SignalRelay nodepool.stack_dump Thread stack dump" in text
    # The dump shows where the main thread was when the signal came.
    assert "in write" in threads["MainThread"]
    assert "SignalRelay" in threads


def test_relay_runs_work_in_order_and_survives_a_failure(log_to):
    stream = log_to(io.StringIO())
    relay = SignalRelay()
    relay.start()
    done = threading.Event()
    order: list[str] = []

    def fail() -> None:
        raise ValueError("broken")

    relay.put(lambda: order.append("first"))
    relay.put(fail)
    relay.start_thread(lambda: order.append("thread"), "Started")
    relay.put(done.set)
    assert done.wait(30)
    wait_for(lambda: "thread" in order, what="the started thread")
    assert order[0] == "first"
    assert "Error handling a signal" in stream.getvalue()
    assert "ValueError: broken" in stream.getvalue()


def swallowing_call(action) -> None:
    """Library code of the kind kazoo has around waking its connection
    thread: a bare ``except`` that would eat a KeyboardInterrupt."""
    try:
        action()
        for _ in range(1000):
            pass
    except:  # noqa: E722 - the point of this helper
        pass


def test_interrupt_inside_library_code_is_kept_for_the_next_check(log_to):
    from nodepool.cmd.node_request import Interrupts

    interrupts = Interrupts()
    with interrupts.installed():
        swallowing_call(lambda: os.kill(os.getpid(), signal.SIGINT))
        assert interrupts.received == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    # Python's own handler is back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_ends_a_wait_of_the_command_at_once(log_to):
    from nodepool.cmd.node_request import Interrupts

    interrupts = Interrupts()
    never = threading.Event()
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
    with interrupts.installed():
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            with interrupts.waiting():
                # Ends with the signal (the test fails if it waits the full
                # time: nothing sets the event).
                never.wait(600)
    timer.join()
    assert interrupts.received == [signal.SIGTERM]
