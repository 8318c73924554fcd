"""What every collective of rnnx.distributed does around its MPI calls: the cross-rank check
that every rank called the same collective with the same arguments, and the wait bounded by
the group's timeout (the watchdog).

A collective is described by a descriptor: a tuple of (field, value) pairs, the first
("collective", its name), e.g. (("collective", "all_reduce"), ("shape", (4,)),
("dtype", "float32"), ("op", "sum")). Its check is one 16-byte MPI_Iallreduce (MAX) of
[d, ~d], d a 63-bit digest of the descriptor: every rank passed the same descriptor iff
max d == min d, i.e. max(d) == ~max(~d). Every collective of the group starts with this same
small allreduce, so two ranks in different collectives (or in one collective with different
shapes, dtypes or operations) match each other's check and learn that they differ, instead of
matching data transfers of different sizes or types (erroneous in MPI: garbage on every rank,
or MPICH's "Message truncated" abort). Then the descriptors are gathered and every rank raises
the same ValueError, naming the first field that differs. With one rank there is nothing to
check or wait for.

Waiting is a loop of MPI_Testall (the rank stays responsive, sched_yield between tests) that,
every _POLL_SECONDS, answers the other ranks' questions "what do you wait in?" (point to point
on the group's control communicator). Past the group's timeout a rank asks every other rank
that question, gives them a moment to answer (a rank waiting in a collective answers from its
loop; a rank computing, stuck or gone does not), prints which collective it waits in and which
ranks never arrived, and ends the whole job with MPI_Abort.
"""
import hashlib
import os
import pickle
import sys
import time

import numpy as np

# How often a waiting rank answers the others' queries, and how long a rank that timed out
# waits for their answers (at most; a tenth of the timeout, at least _ANSWER_SECONDS_MIN).
_POLL_SECONDS = 0.01
_ANSWER_SECONDS_MIN, _ANSWER_SECONDS_MAX = 0.5, 2.0
# A wait tests its requests without yielding the core for this long first (latency of small
# collectives), then yields it between tests (to the other ranks of a busy host).
_SPIN_SECONDS = 0.0002
_QUERY, _ANSWER = 1, 2  # message tags on the control communicator
TIMEOUT_EXIT_CODE = 1
# How long a message written just before MPI_Abort is given to reach mpiexec (see report).
_ABORT_GRACE_SECONDS = 0.5

# The collective of a rank that leaves the group: destroy_process_group, or its process's exit
# while in the group (see __init__).
LEAVE = "destroy_process_group"


class _Nothing:
    """The value of a field that a rank's descriptor does not have."""

    def __repr__(self):
        return "nothing"


NOTHING = _Nothing()


def report(text):
    """Write a message to stderr now (before an abort), and give mpiexec's I/O forwarding a
    moment to pass it on: MPI_Abort kills the ranks and their proxies at once, and a message
    still in a proxy's pipe is lost (seen when two ranks abort together on a busy machine)."""
    sys.stderr.write(f"rnnx.distributed: {text.rstrip()}\n")
    sys.stderr.flush()
    time.sleep(_ABORT_GRACE_SECONDS)


def digest(descriptor):
    """A 63-bit non-negative integer digest of repr(descriptor) (the same on every rank)."""
    raw = hashlib.blake2b(repr(descriptor).encode(), digest_size=8).digest()
    return int.from_bytes(raw, "little") >> 1


def describe(descriptor, length=120):
    """'name(field=value, ...)' of a descriptor, the fields cut short ('...') after `length`
    characters."""
    (_, name), *fields = descriptor
    shown = []
    for i, (key, value) in enumerate(fields):
        if i and sum(map(len, shown)) > length:
            shown.append("...")
            break
        shown.append(f"{key}={value!r}")
    return f"{name}({', '.join(shown)})"


def first_difference(descriptors):
    """(rank, field, rank 0's value, that rank's value) of the first field, in rank 0's order
    (then the other rank's extra fields), that differs at the first rank that differs; None
    if every rank's descriptor is rank 0's. Values are compared by repr, as the digest sees
    them."""
    base = dict(descriptors[0])
    for rank, descriptor in enumerate(descriptors[1:], 1):
        other = dict(descriptor)
        for field in list(base) + [f for f in other if f not in base]:
            mine, theirs = base.get(field, NOTHING), other.get(field, NOTHING)
            if repr(mine) != repr(theirs):
                return rank, field, mine, theirs
    return None


def mismatch_message(descriptors, seq, what):
    """The error of collective #seq whose ranks passed different descriptors (see
    first_difference); `what` names the subject when the ranks are in the same collective."""
    rank, field, mine, theirs = first_difference(descriptors)
    if field != "collective":
        return (f"{what} differs across the ranks of the process group: {field}: {mine!r} on "
                f"rank 0, {theirs!r} on rank {rank}")
    text = (f"the ranks are in different collectives (collective #{seq} of the process group): "
            f"{describe(descriptors[0])} on rank 0, {describe(descriptors[rank])} on rank {rank}")
    leaving = [r for r, d in enumerate(descriptors) if dict(d)["collective"] == LEAVE]
    if leaving:
        text += (f"; rank {leaving[0]} is leaving the group (destroy_process_group, or its "
                 f"process exits: sys.exit or the end of its script)")
    return text


class Collective:
    """One collective call of the group: starts its check at once (see the module docstring);
    checked() waits for it, wait(requests) waits for its MPI requests, both bounded by the
    group's timeout. `what` names the subject of a mismatch (default: the call of the
    collective); `digest_` is the descriptor's digest if already known."""

    def __init__(self, group, descriptor, what=None, digest_=None):
        group.seq += 1
        self.group, self.descriptor, self.seq = group, descriptor, group.seq
        self.what = what or f"the call of {descriptor[0][1]} (collective #{self.seq})"
        self._check = self._check_request = None
        if group.size > 1:
            d = digest(descriptor) if digest_ is None else digest_
            self._check = np.array([d, ~d], np.int64)
            self._check_request = group.comm.Iallreduce(group.MPI.IN_PLACE, self._check,
                                                        op=group.MPI.MAX)

    def checked(self):
        """Wait for the check (every rank has arrived); ValueError on every rank if their
        descriptors differ. Returns self."""
        if self._check is None:
            return self
        self.wait([self._check_request])
        check, self._check = self._check, None
        if check[0] != ~check[1]:
            raise ValueError(mismatch_message(self.gather(self.descriptor), self.seq, self.what))
        return self

    def wait(self, requests):
        """Wait for the MPI requests (see wait())."""
        wait(self.group, requests, self)

    def gather(self, obj):
        """[rank r's obj for r in the group] (picklable objects of any size, on every rank)."""
        comm = self.group.comm
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        sizes = np.zeros(self.group.size, np.int64)
        self.wait([comm.Iallgather(np.array([data.size], np.int64), sizes)])
        received = np.empty(int(sizes.sum()), np.uint8)
        self.wait([comm.Iallgatherv(data, [received, sizes.tolist()])])
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return [pickle.loads(received[a:b].tobytes()) for a, b in zip(bounds[:-1], bounds[1:])]

    def state(self, since):
        """What this rank answers while waiting in this collective (see answer_queries)."""
        return self.seq, describe(self.descriptor), time.monotonic() - since


def wait(group, requests, collective):
    """Wait until every MPI request is complete; past group.timeout seconds, time_out."""
    test_all = group.MPI.Request.Testall
    if test_all(requests):
        return
    start = time.monotonic()
    group.waiting = (collective, start)
    try:
        poll = start + _POLL_SECONDS
        while not test_all(requests):
            now = time.monotonic()
            if now >= poll:
                answer_queries(group)
                if now - start >= group.timeout:
                    time_out(group, collective, now - start)
                poll = now + _POLL_SECONDS
            if now - start > _SPIN_SECONDS:
                os.sched_yield()
    finally:
        group.waiting = None


def answer_queries(group):
    """Answer every pending query of another rank with what this rank waits in (None: not in
    a collective)."""
    mpi, control = group.MPI, group.control
    status = mpi.Status()
    while control.Iprobe(mpi.ANY_SOURCE, _QUERY, status):
        source = status.Get_source()
        control.recv(source=source, tag=_QUERY)
        state = None if group.waiting is None else group.waiting[0].state(group.waiting[1])
        group.sends = [r for r in group.sends if not r.Test()]
        group.sends.append(control.isend(state, dest=source, tag=_ANSWER))


def time_out(group, collective, waited):
    """Ask the other ranks what they wait in, report which never arrived, end the job."""
    mpi, control = group.MPI, group.control
    others = [r for r in range(group.size) if r != group.rank]
    group.sends.extend(control.isend(None, dest=r, tag=_QUERY) for r in others)
    answers, status = {}, mpi.Status()
    deadline = time.monotonic() + min(_ANSWER_SECONDS_MAX,
                                      max(_ANSWER_SECONDS_MIN, group.timeout / 10))
    while len(answers) < len(others) and time.monotonic() < deadline:
        answer_queries(group)
        while control.Iprobe(mpi.ANY_SOURCE, _ANSWER, status):
            source = status.Get_source()
            answers[source] = control.recv(source=source, tag=_ANSWER)
        time.sleep(0.001)
    here = describe(collective.descriptor)
    arrived = [r for r in others if answers.get(r) and answers[r][:2] == (collective.seq, here)]
    missing = [r for r in others if r not in arrived]
    lines = [f"rank {group.rank} of {group.size} timed out after {waited:.1f} s (the process "
             f"group's timeout, init_process_group(timeout=...)) waiting in {here}, collective "
             f"#{collective.seq} of the process group; ranks that never arrived: "
             f"{', '.join(map(str, missing))}; ending the job (exit code {TIMEOUT_EXIT_CODE})"]
    for r in missing:
        answer = answers.get(r)
        lines.append(f"  rank {r}: " + (
            "no answer (busy outside rnnx.distributed's collectives, stuck, or gone)"
            if answer is None else
            f"waits in {answer[1]}, collective #{answer[0]}, for {answer[2]:.1f} s"))
    report("\n".join(lines))
    group.world.Abort(TIMEOUT_EXIT_CODE)
