"""Where rclpy needs help, in one place: lifecycle change_state requests for a transition the state does not have,
and a spin loop that ends cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def guard_change_state(node: Any) -> None:
    """A change_state request for a transition the current state does not have (``ros2 lifecycle set`` twice, a
    client that asks again) makes rclpy's LifecycleNode raise inside the service callback, which ends the process.
    Refuse it instead: success false and a warning naming the state; the node keeps running."""
    service = getattr(node, "_service_change_state", None)
    if service is None:
        return
    handle = service.callback

    def guarded(request, response):
        try:
            return handle(request, response)
        except Exception as error:  # rclpy's RCLError: "Transition is not registered"
            if "ransition" not in str(error):
                raise
            state = node._state_machine.current_state[1]
            node.get_logger().warning(
                f"refused lifecycle transition {request.transition.id} '{request.transition.label}' in state "
                f"'{state}': not a transition of that state (ros2 lifecycle list {node.get_name()} lists them)")
            response.success = False
            return response

    service.callback = guarded


def init_without_signal_handlers(args=None) -> None:
    """rclpy.init without rclpy's own SIGINT/SIGTERM handlers (where this rclpy has the option)."""
    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except (ImportError, TypeError):  # an rclpy without the option: its own handlers stay
        rclpy.init(args=args)


def stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM (Ctrl-C, ``ros2 launch`` stopping the node) set, and nothing else: install
    it before the node is built, so a signal during configure/activate ends the process cleanly too."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def spin_until(node: Any, stop: threading.Event, on_exit: Callable[[], None]) -> None:
    """Spin ``node`` until ``stop`` is set (:func:`stop_on_signals`). The loop checks it between callbacks, so the
    node is torn down from the main thread once no callback runs: a clean exit, code 0. ``on_exit`` runs first
    (stop worker threads)."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        on_exit()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
