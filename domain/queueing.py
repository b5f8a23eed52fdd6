"""Queueing arithmetic for the estimated wait: Erlang C, the wait at a known place in the queue,
and a group's service rate from its recent releases. Plain functions, no I/O: the store feeds
them (store/estimate.py), the benchmark compares against them (bench/queueing.py).

An M/M/c queue: arrivals at rate λ, c seats each serving at rate μ (the mean handling time is
1/μ), first come first served. Erlang C is the chance an arrival finds every seat taken, and
gives the mean wait of an arrival whose place is not known yet. A visitor in the queue knows
their place k: with every seat busy they are served after k departures, each coming at rate cμ
(handling times are memoryless), so their expected wait is k / (cμ) — the estimator's formula.
Averaged over the places arrivals find, that is Erlang C's mean wait again
(tests/test_estimate.py checks the two agree).
"""

from __future__ import annotations

import math

# The estimate a visitor was last told is told again when it moves by more than this share.
ESTIMATE_MOVED_SHARE = 0.2

# How many releases the policy's expected handling time counts for against the group's own:
# with fewer recent releases than this the policy's figure weighs more than the history.
PRIOR_RELEASES = 3.0


def erlang_c(seats: int, offered_load: float) -> float:
    """The chance an arrival waits, with `seats` servers and offered load a = λ/μ (in
    Erlangs). 1.0 when a ≥ seats (the queue grows without end)."""
    if seats < 1:
        raise ValueError("seats must be at least 1")
    if offered_load <= 0:
        return 0.0
    if offered_load >= seats:
        return 1.0
    # Erlang B by its stable recursion, then C from B.
    blocking = 1.0
    for n in range(1, seats + 1):
        blocking = offered_load * blocking / (n + offered_load * blocking)
    rho = offered_load / seats
    return blocking / (1 - rho + rho * blocking)


def mmc_mean_wait(arrival_rate: float, service_rate: float, seats: int) -> float:
    """Mean time in queue (before service) of an M/M/c queue: C(c, a) / (cμ - λ).
    Infinite when λ ≥ cμ."""
    capacity = seats * service_rate
    if arrival_rate >= capacity:
        return math.inf
    return erlang_c(seats, arrival_rate / service_rate) / (capacity - arrival_rate)


def wait_at_position(position: int, *, seats: int, free_seats: int, rate_per_seat: float) -> float:
    """Expected seconds until the visitor at this 1-based place is served: the places beyond
    the free seats wait for that many departures of the `seats` busy ones. 0 when a free seat
    is theirs (the assignment is under way)."""
    ahead_of_a_seat = max(0, position - max(0, free_seats))
    if ahead_of_a_seat == 0:
        return 0.0
    return ahead_of_a_seat / (max(1, seats) * rate_per_seat)


def service_rate(*, releases: int, busy_seconds: float, expected_handling_seconds: float) -> float:
    """Departures per busy seat per second: the group's recent releases over the seat time
    its conversations held (the exponential's maximum-likelihood rate), with the policy's
    expected handling time counted as PRIOR_RELEASES releases of that length. With no history
    it is the policy's rate; with much it is the group's own."""
    prior_seconds = PRIOR_RELEASES * expected_handling_seconds
    return (releases + PRIOR_RELEASES) / (max(0.0, busy_seconds) + prior_seconds)


def moved(told: float | None, now: float | None) -> bool:
    """Whether an estimate moved enough since it was told to be told again."""
    if told is None or now is None:
        return told is not now
    if told == 0:
        return now > 0
    return abs(now - told) > ESTIMATE_MOVED_SHARE * told
