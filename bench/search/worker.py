"""The one worker loop: claim a trial of a shared study, run it, again, until nothing is left. `dct search`,
`dct worker --study` and `dct worker --grid` (bench.scale.shared_grid) all run it.

    loop:  fail stale trials (their workers died; Retry enqueues them again, capped)
           job.wants(trials)?  -> job.run_one(): claim one trial (nothing if another worker took it), run it
           else, while other workers' trials run (wait_for_others): sleep, look again (one may die)
           else: done

A search claims through study.optimize (Optuna pops the first waiting trial or samples a new one); a grid
claims its waiting trials in spec order. Ctrl-C or SIGTERM (SLURM's preemption) stops the loop between or
inside trials: the running trial is handed back (bench.search.storage.hand_back: enqueued again, not
counted as a retry) and its cell killed by bench.child.
"""

from __future__ import annotations

import signal
import threading
import time
import warnings
from typing import Protocol

from rich.console import Console

from dct.errors import DCTError

from bench.search.storage import hand_back


class Job(Protocol):
    current: int | None  # the number of the trial this worker runs now, handed back when stopped

    def wants(self, trials: list) -> bool:
        """Whether to claim (or create) a trial now, given all the study's trials."""

    def run_one(self) -> None:
        """Claim one trial and run it to its end (nothing when there was none left to claim)."""


def fail_stale(study) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def work(study, job: Job, *, wait_for_others: bool, poll: float, console: Console | None = None,
         signals=None) -> int | None:
    """Run `job`'s trials until none is left (see the module docstring). Returns the signal that stopped
    the worker, or None. `signals`: a bench.grid._Signals already entered (else one is entered here)."""
    from bench.grid import GridInterrupted, _Signals
    from optuna.trial import TrialState

    console = console or Console(stderr=True)
    own = signals is None
    signals = signals or _Signals()
    try:
        if own:
            signals.__enter__()
        try:
            while True:
                fail_stale(study)
                trials = study.get_trials(deepcopy=False)
                if job.wants(trials):
                    job.current = None
                    job.run_one()
                    continue
                if wait_for_others and any(t.state == TrialState.RUNNING for t in trials):
                    time.sleep(poll)  # another worker's trial may yet come back to us
                    continue
                return None
        finally:
            if own:
                signals.__exit__(None, None, None)
    except KeyboardInterrupt as e:
        number = job.current
        hand_back(study, number)
        signum = e.signum if isinstance(e, GridInterrupted) else signal.SIGINT
        console.print(f"[yellow]stopped by {signal.Signals(signum).name}[/]: trial {number} handed back "
                      "(re-queued); run the same command again to resume", highlight=False)
        return signum


class ClaimLost(DCTError):
    """The trial this worker ran was failed as stale by another worker (this one stopped heartbeating for
    longer than the grace period): the cell is killed and nothing is written; another worker has it."""


class ClaimWatch:
    """While a grid cell runs: records the trial's heartbeat every `interval` seconds and checks that the
    trial is still this worker's (RUNNING); when it is not, interrupts the main thread (SIGUSR1 ->
    ClaimLost), so that bench.child kills the cell at once."""

    def __init__(self, storage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dct-claim-watch", daemon=True)
        self._main = threading.main_thread().ident
        self._previous = None

    def still_ours(self) -> bool:
        from optuna.trial import TrialState

        return self.storage.get_trial(self.trial_id).state == TrialState.RUNNING

    def _run(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
                ours = self.still_ours()
            except Exception:  # noqa: BLE001 - storage unreachable: try again until the grace period is gone
                ours = True
            if not ours:
                self.lost.set()
                if self._previous is not None:
                    signal.pthread_kill(self._main, signal.SIGUSR1)
                return
            if self._stop.wait(self.interval):
                return

    def check(self, message: dict | None = None) -> None:
        if self.lost.is_set():
            raise ClaimLost(f"trial {self.trial_id} was taken over")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                raise ClaimLost(f"trial {self.trial_id} was taken over")

            self._previous = signal.signal(signal.SIGUSR1, handler)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        try:
            self._thread.join()
        finally:
            if self._previous is not None:
                signal.signal(signal.SIGUSR1, self._previous)
