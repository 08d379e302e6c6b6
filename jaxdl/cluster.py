"""Multi-process runs: `jax.distributed` set up so that a lost process ends the others
with one line, not with an XLA abort.

By default JAX's coordination service makes the processes share fate: when one is killed,
the survivors' collectives fail at once, but they then wait in JAX's shutdown barrier for
the lost process until its heartbeats time out, and die of SIGABRT with a stack dump.
Here the service runs in recoverable mode (`jax_enable_recoverability`), which propagates
no error; instead a thread of each process asks the service, once a second, which
processes are alive (`get_live_nodes`: answered once every live process has asked, and a
lost one counts as dead when it has missed its heartbeats). A process that finds another
missing hands the lost ones to `on_lost`, which app.py turns into one line and an exit.
The watch does not rely on the collectives failing: one that hangs on a lost peer (gloo
fails at once on CPU; other transports may wait) ends the same way.

Recoverable mode also drops the synchronised shutdown, so `Watch.finish` restores it: all
processes meet at a barrier, the others disconnect, and process 0, which hosts the
service, leaves last. `finish` also ends the watch's thread, so that no call of ours is
in flight while JAX shuts the client down at exit.

Process 0 hosts the coordination service: when it is the one lost, JAX ends the others at
once with its own fatal error (naming the leader task), before any Python code can run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Seconds between two liveness rounds: a round costs one small RPC per process.
_ROUND_SECONDS = 1.0
# How long a process waits at the end for the others to finish too: JAX's own default
# (shutdown_timeout_seconds). Not the heartbeat timeout: process 0 still writes the summary
# and plots, and a process lost meanwhile is caught by the watch anyway.
_FINISH_SECONDS = 300
_FINISHED = "jaxdl_finished"  # the end barrier, and the key each process sets before it


def initialize(jax, *, coordinator_address: str | None, num_processes: int | None,
               process_id: int | None, heartbeat_timeout: int | None) -> None:
    """`jax.distributed.initialize`, with CPU collectives over gloo and no fate-sharing."""
    # CPU devices of different processes talk through gloo; GPUs use NCCL anyway.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_recoverability", True)
    timeouts = {} if heartbeat_timeout is None else {"heartbeat_timeout_seconds":
                                                     heartbeat_timeout}
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               **timeouts)


class Watch:
    """Watches the other processes of this run from a daemon thread; `on_lost(ids)` is
    called from that thread when processes are lost (it should end the process)."""

    def __init__(self, client, *, process_id: int, num_processes: int,
                 on_lost: Callable[[list[int]], None], round_seconds: float = _ROUND_SECONDS):
        self._client, self._on_lost, self._pause = client, on_lost, round_seconds
        self.process_id, self._everyone = process_id, list(range(num_processes))
        self._changed = threading.Condition()
        self._rounds, self._live, self._closed = 0, set(self._everyone), False
        self._thread = threading.Thread(target=self._run, name="jaxdl-watch", daemon=True)
        self._thread.start()

    def _done(self, live: set[int]) -> bool:
        """After `finish`: process 0 watches until the others have disconnected; the
        others stop at once."""
        return self._closed and (self.process_id != 0 or live == {0})

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._done(self._live):
                    return
            try:
                live = set(self._client.get_live_nodes(self._everyone))
            except Exception:  # noqa: BLE001 - the service is unreachable: process 0 is lost
                if self.process_id == 0:  # it runs here: a transient error, ask again
                    time.sleep(self._pause)
                    continue
                live = set(self._everyone) - {0}
            with self._changed:
                self._rounds, self._live = self._rounds + 1, live
                self._changed.notify_all()
                if self._done(live):
                    return
                missing = [] if self._closed else sorted(set(self._everyone) - live)
            # One that reached `finish` left on purpose, maybe before this process got there.
            lost = [i for i in missing if not self._finished(i)]
            if lost:
                self._on_lost(lost)
                return
            time.sleep(self._pause)

    def _finished(self, process_id: int) -> bool:
        try:
            self._client.key_value_try_get(f"{_FINISHED}/{process_id}")
        except Exception:  # noqa: BLE001 - NOT_FOUND: it did not
            return False
        return True

    def settle(self, timeout: float) -> None:
        """Waits (up to `timeout` s) for a liveness round that began after this call: when
        a collective failed because a process was lost, `on_lost` runs before we go on."""
        with self._changed:
            target = self._rounds + 2  # the round under way may have begun before
            self._changed.wait_for(lambda: self._rounds >= target, timeout=timeout)

    def finish(self, timeout: float = _FINISH_SECONDS) -> None:
        """Leaves the run with the others: all meet at a barrier; process 0, which hosts
        the coordination service, disconnects last, after the others have."""
        self._client.key_value_set(f"{_FINISHED}/{self.process_id}", "1")
        self._client.wait_at_barrier(_FINISHED, int(timeout * 1000))
        with self._changed:
            self._closed = True
        # Process 0's thread ends when the others have disconnected (JAX's own shutdown at
        # their exit); another's after the round under way, which process 0 answers.
        self._thread.join(timeout)
