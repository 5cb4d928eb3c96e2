"""Exactly-once grid execution on an Optuna storage shared by any number of worker processes and machines.

The protocol (see ``docs/sweeps.md`` for the argument in full):

1. **Queue.** Every grid point is a WAITING trial whose ``fixed_params`` hold the point (``Study.enqueue_trial``).
   The study's creator enqueues the grid once; the creation itself is atomic (unique study name), so only one
   process does it.
2. **Claim.** A worker claims a WAITING trial with ``storage.set_trial_state_values(id, RUNNING)``. Optuna's RDB
   storage does this as ``SELECT … FOR UPDATE`` + "is it still WAITING?" + ``UPDATE`` in one transaction and returns
   False to every loser (``optuna/storages/_rdb/storage.py``, ``set_trial_state_values``); on SQLite we make that
   transaction ``BEGIN IMMEDIATE`` (``_storage.py``). We never call ``Study.ask()``, which creates a fresh,
   parameterless trial when the queue is empty.
3. **Lease.** The claimer writes a lease into the trial's system attrs (host + boot id, pid, process start time,
   wall-clock beat) and renews the beat every ``heartbeat`` seconds from a thread. A RUNNING trial is *dead* when its
   process is gone (same host: checked through ``/proc``, zombies count as gone) or its beat is older than
   ``grace`` seconds (other hosts; clocks must agree to well within ``grace``).
4. **Dedup at claim.** Duplicated queue entries can appear (two processes re-enqueueing the same dead point at
   once), so after claiming trial *t* of point *p* the worker re-reads the study and runs *t* only if no other
   trial of *p* is done (COMPLETE, PRUNED, or FAIL as diverged / without a metric) and no *lower-numbered* trial of
   *p* is WAITING or RUNNING-alive. A lower-numbered RUNNING-dead trial is first failed ("worker died"). Otherwise
   *t* is failed as "duplicate" without running. Trial numbers are assigned under a lock on the study row
   (``RDBStorage._create_new_trial``), so they follow commit order: a trial that can see *t* sees every lower one.
   Hence at most one trial per point is ever run to its end, and the lowest live one always runs.
5. **Resume.** Every start (the same command again) and every worker that finds the queue empty (it keeps polling
   while other workers run trials) fails the dead RUNNING trials with reason "worker died" and enqueues each point
   that has no done, WAITING or RUNNING trial. A dead
   worker's trial cannot be told later: Optuna refuses to update a finished trial (``UpdateFinishedTrialError``),
   so a worker that was wrongly declared dead loses its result instead of recording a second one.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "LEASE_KEY",
    "OUTCOME_KEY",
    "Lease",
    "LeaseLost",
    "Outcome",
    "claim",
    "is_alive",
    "is_done",
    "point_key",
    "reconcile",
    "work",
]

log = logging.getLogger("epsfinder.sweep")

LEASE_KEY = "epsfinder:lease"
OUTCOME_KEY = "epsfinder:outcome"
REASON_KEY = "reason"
#: FAIL outcomes that count as a finished grid point (running it again would give the same answer).
FINAL_FAIL_OUTCOMES = frozenset({"diverged", "no-metric"})
#: FAIL outcomes that a start with ``retry_errors=False`` (a worker finding the queue empty) does not re-enqueue.
_ERROR_OUTCOMES = frozenset({"error"})

DEFAULT_HEARTBEAT = 10.0
DEFAULT_GRACE = 60.0


class LeaseLost(Exception):
    """This worker's trial was failed by another process (declared dead); its result must be discarded."""


# --------------------------------------------------------------------------- identity


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


_HOST = f"{socket.gethostname()}/{_boot_id()}"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start_time)`` of a process from ``/proc/<pid>/stat``; None if it does not exist or no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def _this_process() -> dict[str, Any]:
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"host": _HOST, "pid": pid, "start": stat[1] if stat else None}


def _process_alive(pid: int, start: str | None) -> bool:
    if os.path.isdir("/proc/self"):
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return start is None or stat[1] == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- trial predicates


def _fmt(v: Any) -> Any:
    return f"{v:.12g}" if isinstance(v, float) else v


def point_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable identity of a grid point (floats compared to 12 significant digits)."""
    return tuple(sorted((k, _fmt(v)) for k, v in params.items()))


def trial_point(trial: Any) -> dict[str, Any]:
    """The grid point of a trial: its ``fixed_params`` (set when enqueued), else its params."""
    fixed = trial.system_attrs.get("fixed_params")
    return dict(fixed) if fixed else dict(trial.params)


def is_done(trial: Any) -> bool:
    """True when the trial finished its grid point for good (rerunning it would give the same answer)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.system_attrs.get(OUTCOME_KEY) in FINAL_FAIL_OUTCOMES


def is_alive(trial: Any, *, grace: float = DEFAULT_GRACE, now: float | None = None) -> bool:
    """Whether a RUNNING trial's worker is alive (see the module docstring, point 3)."""
    now = time.time() if now is None else now
    lease = trial.system_attrs.get(LEASE_KEY)
    if not lease:
        # Claimed moments ago and the lease not yet written, or the claimer died in between.
        start = trial.datetime_start
        return start is None or (datetime.now() - start).total_seconds() < grace
    if lease.get("host") == _HOST and not _process_alive(int(lease["pid"]), lease.get("start")):
        return False
    return now - float(lease.get("beat", 0.0)) < grace


# --------------------------------------------------------------------------- lease


@dataclass
class Lease:
    """The heartbeat of one claimed trial: written at claim, renewed from a daemon thread, stopped at the end."""

    storage: Any
    trial_id: int
    heartbeat: float = DEFAULT_HEARTBEAT
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def beat(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        value = {**_this_process(), "beat": time.time()}
        try:
            self.storage.set_trial_system_attr(self.trial_id, LEASE_KEY, value)
        except UpdateFinishedTrialError:
            self.lost = True
        except Exception as err:  # a storage hiccup: the next beat may succeed; staleness needs `grace` seconds
            log.warning("heartbeat of trial id %s failed: %s", self.trial_id, err)

    def start(self) -> Lease:
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"epsfinder-lease-{self.trial_id}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self.beat()
            if self.lost:
                return

    def check(self) -> None:
        """Raise :class:`LeaseLost` when another process has failed this trial."""
        if self.lost:
            raise LeaseLost(f"trial id {self.trial_id} was failed by another worker that judged this one dead")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


# --------------------------------------------------------------------------- state changes


def _fail(study: Any, trial_id: int, outcome: str, reason: str) -> bool:
    """Fail a RUNNING trial with an outcome and reason; False if it was already finished by someone else."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        storage.set_trial_system_attr(trial_id, OUTCOME_KEY, outcome)
        storage.set_trial_user_attr(trial_id, REASON_KEY, reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    return True


def _reap(study: Any, trial: Any, grace: float) -> bool:
    lease = trial.system_attrs.get(LEASE_KEY) or {}
    where = f"pid {lease['pid']} on {str(lease.get('host', '?')).split('/')[0]}" if lease else "no heartbeat"
    done = _fail(study, trial._trial_id, "worker-died", f"worker died ({where}); the point is run again")
    if done:
        log.warning("trial %d: its worker died (%s); failed it so that its point runs again", trial.number, where)
    return done


def _blocker(study: Any, mine: Any, grace: float) -> Any | None:
    """The trial that makes ``mine`` a duplicate, or None when ``mine`` must run (module docstring, point 4)."""
    from optuna.trial import TrialState

    key = point_key(trial_point(mine))
    for _ in range(100):
        restart = False
        for other in study.get_trials(deepcopy=False):
            if other.number == mine.number or point_key(trial_point(other)) != key:
                continue
            if is_done(other):
                return other
            if other.number > mine.number:
                continue
            if other.state == TrialState.WAITING:
                return other
            if other.state == TrialState.RUNNING:
                if is_alive(other, grace=grace):
                    return other
                if not _reap(study, other, grace):
                    restart = True  # it finished meanwhile: look again
                    break
        if not restart:
            return None
    raise RuntimeError(f"trial {mine.number}: the study keeps changing under the duplicate check; try again")


def claim(
    study: Any, *, heartbeat: float = DEFAULT_HEARTBEAT, grace: float = DEFAULT_GRACE
) -> tuple[Any, Lease] | None:
    """Claim the lowest-numbered WAITING trial that must run; None when the queue is empty.

    Returns:
        ``(trial, lease)``: an ``optuna.Trial`` in state RUNNING owned by this process, and its running lease.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    while True:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            return None
        mine = None
        for cand in waiting:
            try:
                if storage.set_trial_state_values(cand._trial_id, TrialState.RUNNING):
                    mine = cand
                    break
            except UpdateFinishedTrialError:
                continue
        if mine is None:
            continue  # every candidate was taken meanwhile: read the queue again
        lease = Lease(storage, mine._trial_id, heartbeat=heartbeat).start()
        current = storage.get_trial(mine._trial_id)
        blocker = _blocker(study, current, grace)
        if blocker is None:
            return optuna.Trial(study, mine._trial_id), lease
        lease.stop()
        why = "already done" if is_done(blocker) else "queued or running"
        _fail(study, mine._trial_id, "duplicate", f"duplicate of trial {blocker.number} ({why}); not run")
        log.info("trial %d: duplicate of trial %d (%s); not run", mine.number, blocker.number, why)


def reconcile(
    study: Any,
    points: Iterable[Mapping[str, Any]],
    *,
    retry_errors: bool = True,
    grace: float = DEFAULT_GRACE,
) -> tuple[int, int]:
    """Fail dead RUNNING trials and enqueue every point that has no done, WAITING or RUNNING trial.

    Args:
        study: the Optuna study.
        points: the grid, as parameter dicts.
        retry_errors: also re-enqueue points whose trial raised an error (on a fresh start); a worker that finds
            the queue empty passes False so that a failing point is not retried in a loop.
        grace: seconds without heartbeat after which a worker on another host counts as dead.

    Returns:
        ``(reaped, enqueued)`` counts.
    """
    from optuna.trial import TrialState

    reaped = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_alive(t, grace=grace) and _reap(study, t, grace):
            reaped += 1
    covered: set[tuple[tuple[str, Any], ...]] = set()
    for t in study.get_trials(deepcopy=False):
        if is_done(t) or t.state in (TrialState.WAITING, TrialState.RUNNING):
            covered.add(point_key(trial_point(t)))
        elif not retry_errors and t.system_attrs.get(OUTCOME_KEY) in _ERROR_OUTCOMES:
            covered.add(point_key(trial_point(t)))
    enqueued = 0
    for p in points:
        if point_key(p) not in covered:
            study.enqueue_trial(dict(p))
            covered.add(point_key(p))
            enqueued += 1
    if enqueued:
        log.info("enqueued %d grid point(s)", enqueued)
    return reaped, enqueued


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as the executor reports it.

    Attributes:
        state: ``"COMPLETE"``, ``"FAIL"`` or ``"PRUNED"``.
        value: the objective (COMPLETE only).
        outcome: a tag stored in the trial's system attrs (``"diverged"``, ``"no-metric"``, ``"error"``, ...).
        reason: a sentence stored as the trial's user attr ``reason``.
        user_attrs: more user attrs to store before the trial finishes.
    """

    state: str
    value: float | None = None
    outcome: str | None = None
    reason: str | None = None
    user_attrs: Mapping[str, Any] = field(default_factory=dict)


def finish(study: Any, trial: Any, result: Outcome) -> bool:
    """Record a trial's outcome; False (and a warning) when another process failed it meanwhile."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    tid = trial._trial_id
    try:
        for k, v in result.user_attrs.items():
            storage.set_trial_user_attr(tid, k, v)
        if result.outcome:
            storage.set_trial_system_attr(tid, OUTCOME_KEY, result.outcome)
        if result.reason:
            storage.set_trial_user_attr(tid, REASON_KEY, result.reason)
        state = TrialState[result.state]
        if state == TrialState.COMPLETE:
            if result.value is None or not math.isfinite(result.value):
                raise ValueError(f"a COMPLETE trial needs a finite value, got {result.value!r}")
            study.tell(trial, result.value)
        else:
            study.tell(trial, state=state)
    except (UpdateFinishedTrialError, ValueError) as err:
        if isinstance(err, ValueError) and "Cannot tell" not in str(err):
            raise
        log.warning("trial %d was failed by another worker while it ran (it judged this one dead); result "
                    "discarded", trial.number)
        return False
    return True


def work(
    study: Any,
    execute: Callable[[Any, Lease], Outcome],
    points: Sequence[Mapping[str, Any]],
    *,
    heartbeat: float = DEFAULT_HEARTBEAT,
    grace: float = DEFAULT_GRACE,
    on_finished: Callable[[], None] | None = None,
    max_trials: int | None = None,
    wait: bool = True,
) -> int:
    """Claim and run trials until no point is left to run.

    When the queue is empty but other workers still run trials, it waits (with ``wait``) and revives the points of
    those that die, so that a sweep finishes as long as one worker lives.

    ``execute(trial, lease)`` runs one trial and returns its :class:`Outcome`; it should call ``lease.check()``
    between epochs. An exception from it fails the trial (outcome ``"error"``, or ``"interrupted"`` for
    KeyboardInterrupt) and propagates.

    Returns:
        the number of trials this worker ran.
    """
    from optuna.trial import TrialState

    ran = 0
    while max_trials is None or ran < max_trials:
        claimed = claim(study, heartbeat=heartbeat, grace=grace)
        if claimed is None:
            _reaped, enqueued = reconcile(study, points, retry_errors=False, grace=grace)
            if enqueued:
                continue
            if not wait or not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            # Other workers still run trials: wait, in case one dies and its point must run again.
            time.sleep(min(5.0, max(0.5, heartbeat / 2)))
            continue
        trial, lease = claimed
        try:
            try:
                result = execute(trial, lease)
            except LeaseLost as err:
                log.warning("trial %d: %s; result discarded", trial.number, err)
                continue
            except BaseException as err:
                tag = "interrupted" if isinstance(err, KeyboardInterrupt) else "error"
                text = f"{type(err).__name__}: {err}".strip()
                _fail(study, trial._trial_id, tag, f"{tag}: {text}"[:1000])
                raise
            finish(study, trial, result)
        finally:
            lease.stop()
        ran += 1
        if on_finished is not None:
            on_finished()
    return ran
