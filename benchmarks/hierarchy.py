"""How many worker ranks one coordinator keeps busy, and how far a two-level plan takes it: a simulation.

No MPI and nothing measured here: a discrete-event model (numpy and heapq only) fed with two costs
measured elsewhere, for tasks of T = 1 s, 10 s and 60 s.

* `store_s` (default 0.25 ms): the coordinator storing one result. benchmarks/ingest.py measured
  0.18-0.3 ms per result on a 2-core machine.
* `dispatch_s` (default 85 us): receiving one message and sending the next task. benchmarks/dispatch.py
  measured ~11,700 zero-length tasks per second, i.e. ~85 us each.

The model
---------
Task durations are T times a log-normal factor (sigma 0.1, mean 1, clipped at +-3 sigma so that the
slowest of millions of tasks is not an artefact of the distribution's tail), drawn from a seeded generator.

Flat (what mpibench does today). N workers pull from one queue of N x K tasks (K per worker on average,
default 20). A worker asks for its first task, then loops: run the task, send its result, wait for the
next task. The coordinator is one FIFO server: a first request costs dispatch_s, a result costs
store_s + dispatch_s (take it in, store it, send the next task or "no more work"). A worker waits while
its message is queued and served. Not modelled: rank 0's polling back-off, message sizes and network
latency (part of the measured dispatch_s, or taken as zero).

Hierarchical (the plan for tens of thousands of ranks). G group leaders, each serving its own k workers
(default 128) exactly as the flat coordinator does, with the same dispatch_s + store_s per result (a
leader writes its group's own part file). A group's share of the plan, k x K tasks, comes from the root
in blocks of B >= k tasks (default B = k): a leader asks for a block at the start, and again whenever the
tasks it holds plus those it has asked for fall to B/2 or fewer, so that the next block is normally there
before it is needed. A worker that asks while its leader holds nothing waits until the block comes. The
root is one FIFO server costing block_s per block (default dispatch_s: one message carries B tasks) and
does nothing per result: the part files are merged after the run, which is not modelled. A leader's own
cost per block (sending the request, taking in the answer) is charged as one dispatch_s when it asks.
Each group has a fixed share: there is no stealing between groups at the end of the run.

Metrics. Worker utilisation = sum of all task durations / (N x makespan); the makespan ends with the
last service (the last result stored). Busy fraction = a coordinator's service time / makespan: the flat
coordinator's, or the busiest leader's and the root's. "Max ranks" is the largest N on a coarse grid
(powers of 2 and 1.5 times them) with utilisation >= 0.95, found by doubling N until it fails and then
trying the 1.5x point below (this assumes utilisation falls with N); for the hierarchy N = G x k, so its
grid starts at 2 groups. The search stops at --max-ranks (default 2^24) and prints ">=" if that passes.

The end of a run costs utilisation whatever the coordinator does: when the queue runs out, workers that
finish early wait for the slowest last task. With K = 20 tasks of +-10 % that alone is 3-5 % (more with
more workers, and more for the hierarchy, whose groups cannot take over each other's last tasks), which
leaves little of the 5 % budget to coordination. So the script also runs every size it reports with all
coordination costs set to 0 ("free", the ceiling), and prints a second table: the largest N whose
utilisation is >= 0.95 x that ceiling, i.e. the size at which coordination itself costs 5 %. For the
hierarchy the ceiling is itself within ~0.5 % of 0.95 over a wide range of sizes, so its max ranks at
0.95 is decided by how the last tasks fall and moves by several grid steps with the seed: the script
prints it for two more seeds. The second table does not have that problem.

Closed form. Each worker brings one result per T seconds and the coordinator serves one per
c = dispatch_s + store_s, so one coordinator keeps about T / c ranks busy: utilisation close to 1 below
that (less the end of the run), about T / (N c) above it. The script prints, per T: the simulated
utilisation and ranks kept busy (N x utilisation) at N = 2 T / c against T / (N c) and T / c; the flat
coordination limit from the second table, bisected between grid points to ~2 %, against T / c; and,
for comparison, the bisected size at which raw utilisation falls below 0.95.

How it is computed
------------------
The flat model is simulated whole, vectorised and exactly: a message sent when a service ends comes
back at least min(duration) later, so every message arriving within min(duration) of the earliest
pending one is already known. Those are served in arrival order by the Lindley recursion
f_i = max(f_(i-1), a_i) + c_i, written as a cumulative sum and a cumulative maximum; a run takes
makespan / min(duration) rounds, a few dozen, whatever N. It equals the event-by-event heapq simulation
of the same model (`events`, mode "flat"; tests/test_hierarchy.py checks this at small N).

The hierarchy goes up to millions of workers, too many to simulate whole in Python, so it is split
into independent FIFO servers. A group (a leader and its k workers) depends on the rest of the run
only through when its blocks arrive. Its first block comes once the root has answered all G first
requests, which reach it together and are answered in order: at r_g = dispatch_s + (g + 1) x block_s.
After that, a block that arrives before the leader first needs a task from it changes nothing in the
group's course. So:

1. S groups (--samples, default 32; evenly spread, always the first and the last) are simulated event
   by event, each alone with its own r_g and a root that answers at once. Once r_g >= (k + 1) x
   dispatch_s a leader has parked all its workers before its first block comes, and its course is the
   same but for a shift by r_g; those courses are simulated once per setting and reused.
2. Every other group takes its block requests from the sampled group nearest to it (shifted to its own
   r_g), and its end from a normal distribution fitted to the sampled groups' spans (first block to
   last result); the run ends with the latest group.
3. The root is run as a FIFO server on all G groups' block requests. A size at which any block arrives
   after it was first needed (a group would have run dry) counts as failing. That is conservative: the
   decomposition no longer holds there, and root contention that large already costs utilisation.

With every group sampled (S >= G) this is exactly the full event simulation of root, leaders and
workers together (`events`, mode "full"; checked at small sizes in tests/test_hierarchy.py). With
sampling it is an estimate: at G = 256 and 1024 (T = 1 s and 10 s, two seeds) utilisation came within
0.5 % of simulating every group; near 0.95 that is enough to move the hierarchy's max ranks by one grid
step.

Usage: python benchmarks/hierarchy.py [--store-s X] [--dispatch-s Y] [--tasks-per-worker K] [--quick]
(also --block-s, --leader-size, --block, --samples, --max-ranks, --seed). --quick: 4 sampled groups,
sizes up to 2^20, the first table only: a smoke run of a few seconds, not the figures.
Last line: `coordinator_max_ranks_at_1s: X`, the ranks one coordinator (today's flat design) keeps >= 95 %
busy with 1-s tasks: stable across seeds, unlike the hierarchy's figure, which depends on how the last
tasks of each group fall.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

STORE_S = 0.25e-3  # benchmarks/ingest.py: 0.18-0.3 ms per result (2 cores)
DISPATCH_S = 85e-6  # benchmarks/dispatch.py: ~11,700 zero-length tasks/s
SIGMA = 0.1  # log-normal jitter of a task's duration
TARGET = 0.95  # utilisation a size must reach
TASK_S = (1.0, 10.0, 60.0)


@dataclass(frozen=True)
class Costs:
    dispatch_s: float = DISPATCH_S
    store_s: float = STORE_S
    block_s: float = DISPATCH_S

    @property
    def per_result(self) -> float:
        return self.dispatch_s + self.store_s


@dataclass
class Outcome:
    ranks: int
    utilisation: float
    busy: float  # flat: the coordinator's busy fraction; hierarchy: the busiest leader's
    makespan: float
    root_busy: float = 0.0
    starved: bool = False  # hierarchy: a group ran dry waiting for a block (the size counts as failing)
    ceiling: float | None = None  # utilisation of the same run with every coordination cost 0, if computed

    @property
    def ok(self) -> bool:
        return self.utilisation >= TARGET and not self.starved


def durations(T: float, n: int, seed: int, stream: int) -> np.ndarray:
    """n task durations: T x log-normal(sigma), mean ~1, clipped at +-3 sigma."""
    z = np.clip(np.random.default_rng([seed, stream]).standard_normal(n), -3.0, 3.0)
    return T * np.exp(SIGMA * z - SIGMA ** 2 / 2)


# --------------------------------------------------------------------------------------------- flat


def flat(n_workers: int, T: float, K: int, costs: Costs, seed: int = 0) -> Outcome:
    """The flat model, whole and exact, in rounds of messages already known (see the module doc)."""
    return replace(_flat(n_workers, T, K, costs, seed))


@functools.lru_cache(maxsize=None)
def _flat(n_workers: int, T: float, K: int, costs: Costs, seed: int) -> Outcome:
    dur = durations(T, n_workers * K, seed, 0)
    total, window = dur.size, float(dur.min())
    d, s = costs.dispatch_s, costs.per_result
    at = np.zeros(n_workers)  # pending messages: arrival time, worker, first request?
    who = np.arange(n_workers)
    first = np.ones(n_workers, bool)
    free = busy = 0.0
    handed = 0
    while at.size:
        sel = at < at.min() + window
        # the first requests all arrive at t = 0 and are served in worker order; later ties have probability 0
        order = np.argsort(at[sel], kind="stable" if handed == 0 else None)
        a, w, f1 = at[sel][order], who[sel][order], first[sel][order]
        at, who, first = at[~sel], who[~sel], first[~sel]
        c = np.where(f1, d, s)
        cum = np.cumsum(c)
        end = cum + np.maximum(free, np.maximum.accumulate(a - (cum - c)))
        free, busy = float(end[-1]), busy + float(cum[-1])
        jobs = handed + np.arange(a.size)
        got = jobs < total
        handed = min(total, handed + a.size)
        at = np.concatenate([at, end[got] + dur[jobs[got]]])
        who = np.concatenate([who, w[got]])
        first = np.concatenate([first, np.zeros(int(got.sum()), bool)])
    return Outcome(n_workers, float(dur.sum()) / (n_workers * free), busy / free, free)


# --------------------------------------------------------------------------------- event by event

_BLOCK, _REQ, _MSG, _START = 0, 1, 2, 3  # event kinds; also their order at equal times
_INIT, _FIRST, _RESULT, _SEND = 0, 1, 2, 3  # what a leader serves


@dataclass
class _Group:
    dur: np.ndarray  # its tasks, in the order handed out
    msgs: deque = field(default_factory=deque)
    free: float = 0.0
    scheduled: bool = False
    busy: float = 0.0
    handed: int = 0  # tasks handed to workers
    received: int = 0  # tasks received from the root
    requested: int = 0
    parked: list = field(default_factory=list)
    work: float = 0.0
    starved: bool = False
    requests: list = field(default_factory=list)  # arrival at the root of each block request
    needed: list = field(default_factory=list)  # when block b >= 1 was first needed


def events(n_groups: int, k: int, T: float, K: int, costs: Costs, *, mode: str = "full", block: int | None = None,
           seed: int = 0, group_ids: list[int] | None = None, first_at: list[float] | None = None) -> dict:
    """Event-by-event (heapq) simulation of the model.

    mode "flat": one coordinator (n_groups must be 1) holding all k x K tasks from the start: the flat model.
    mode "full": n_groups leaders of k workers each and the root, all together.
    mode "free": the groups `group_ids`, each with a root that sends its first block at first_at[i] and every
    later one block_s after the request reaches it (the decomposition's per-group step).
    """
    d, s, B = costs.dispatch_s, costs.per_result, block or k
    low = -1 if mode == "flat" else B // 2
    quota = k * K
    ids = group_ids if group_ids is not None else list(range(n_groups))
    groups = [_Group(durations(T, quota, seed, 0 if mode == "flat" else g + 1)) for g in ids]
    heap: list = []
    seq = 0

    def push(t: float, kind: int, gi: int, *payload):
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, kind, gi, seq, payload))

    def arrive(t: float, gi: int, msg: tuple):
        grp = groups[gi]
        grp.msgs.append(msg)
        if not grp.scheduled:
            grp.scheduled = True
            push(max(t, grp.free), _START, gi)

    def prefetch(grp: _Group) -> list[int]:
        sizes = []
        while grp.requested - grp.handed <= low and grp.requested < quota:
            sizes.append(min(B, quota - grp.requested))
            grp.requested += sizes[-1]
        return sizes

    root_free = root_busy = 0.0
    for gi, grp in enumerate(groups):
        if mode == "flat":
            grp.received = grp.requested = quota
        else:
            grp.msgs.append((_INIT, -1))
        grp.msgs.extend((_FIRST, w) for w in range(k))
        grp.scheduled = True
        push(0.0, _START, gi)
    while heap:
        t, kind, gi, _, payload = heapq.heappop(heap)
        grp = groups[gi]
        if kind == _MSG:
            arrive(t, gi, payload)
        elif kind == _REQ:  # a block request reaches the root
            size, nth = payload
            if mode == "full":
                root_free = max(t, root_free) + costs.block_s
                root_busy += costs.block_s
                push(root_free, _BLOCK, gi, size)
            else:
                push(first_at[gi] if nth == 0 else t + costs.block_s, _BLOCK, gi, size)
        elif kind == _BLOCK:
            grp.received += payload[0]
            for w in grp.parked:
                arrive(t, gi, (_SEND, w))
            grp.parked.clear()
        else:  # _START: the leader serves its next message
            what, w = grp.msgs.popleft()
            cost = 0.0
            if what != _INIT:
                cost = d if what in (_FIRST, _SEND) else s
                if grp.received > grp.handed:
                    j = grp.handed
                    grp.handed += 1
                    if j and j % B == 0:
                        grp.needed.append(t)
                    grp.work += grp.dur[j]
                    push(t + cost + grp.dur[j], _MSG, gi, _RESULT, w)
                elif grp.received < quota:  # more is coming: the worker waits for it
                    if what == _SEND:
                        cost = 0.0
                    grp.parked.append(w)
                    grp.starved |= grp.received > 0
            sizes = prefetch(grp)
            cost += d * len(sizes)
            for size in sizes:
                grp.requests.append(t + cost)
                push(t + cost, _REQ, gi, size, len(grp.requests) - 1)
            grp.free, grp.busy = t + cost, grp.busy + cost
            if grp.msgs:
                push(grp.free, _START, gi)
            else:
                grp.scheduled = False
    makespan = max(g.free for g in groups)
    work = sum(g.work for g in groups)
    return {"utilisation": work / (len(groups) * k * makespan), "makespan": makespan, "work": work,
            "busy": max(g.busy for g in groups) / makespan, "root_busy": root_busy / makespan,
            "starved": any(g.starved for g in groups), "groups": groups}


# ------------------------------------------------------------------------------------- hierarchy


_COURSES: dict = {}


def course(k: int, T: float, K: int, costs: Costs, B: int, seed: int, stream: int, r: float) -> dict:
    """Group `stream` (its durations) simulated on its own, its first block arriving at r; times relative to r.

    Once r >= (k + 1) dispatch_s the leader has parked all its workers before the block comes, and the
    course no longer depends on r but for a shift: those are simulated once and kept.
    """
    settled = r >= (k + 1) * costs.dispatch_s
    key = (k, T, K, costs, B, seed, stream, None if settled else r)
    if key not in _COURSES:
        at = (k + 1) * costs.dispatch_s if settled else r
        g = events(1, k, T, K, costs, mode="free", block=B, seed=seed, group_ids=[stream], first_at=[at])["groups"][0]
        _COURSES[key] = {"end": g.free - at, "work": g.work, "busy": g.busy, "starved": g.starved,
                         "requests": np.asarray(g.requests[1:]) - at, "needed": np.asarray(g.needed) - at}
    return _COURSES[key]


def hierarchy(n_groups: int, k: int, T: float, K: int, costs: Costs, *, block: int | None = None,
              samples: int = 32, seed: int = 0) -> Outcome:
    """The hierarchy, decomposed into its FIFO servers (see the module doc); exact if samples >= n_groups."""
    G, B = n_groups, block or k
    r = costs.dispatch_s + (np.arange(G) + 1) * costs.block_s  # first block at each leader
    picked = np.array(sorted({int(round(x)) for x in np.linspace(0, G - 1, min(samples, G))}))
    runs = [course(k, T, K, costs, B, seed, i, float(r[g])) for i, g in enumerate(picked)]
    # the groups not simulated: each borrows the course of the nearest sampled group for its block requests,
    # and its end is r_g + a draw from a normal fitted to the sampled groups' spans (first block to last result)
    pos = np.searchsorted(picked, np.arange(G))
    lower, upper = np.clip(pos - 1, 0, picked.size - 1), np.clip(pos, 0, picked.size - 1)
    src = np.where(picked[upper] - np.arange(G) <= np.arange(G) - picked[lower], upper, lower)
    span = np.array([c["end"] for c in runs])
    spread = span.std(ddof=1) if span.size > 1 else 0.0
    finish = r + span.mean() + spread * np.random.default_rng([seed, int(T * 1e6), G]).standard_normal(G)
    finish[picked] = r[picked] + span
    makespan = float(finish.max())
    work_each = np.array([c["work"] for c in runs])
    work = float(work_each.sum() + (G - picked.size) * work_each.mean())
    # the root: all first requests arrive together and are answered in order at r; then the later ones
    starved = any(c["starved"] for c in runs)
    later = np.array([c["requests"] for c in runs])  # every group asks for the same number of blocks
    n_later = later.shape[1]
    if n_later:
        need = np.array([c["needed"][:n_later] for c in runs])
        arrive_t = (later[src] + r[:, None]).ravel()
        order = np.argsort(arrive_t)
        a = arrive_t[order]
        cum = costs.block_s * np.arange(1, a.size + 1)
        served = cum + np.maximum(float(r[-1]), np.maximum.accumulate(a - (cum - costs.block_s)))
        starved |= bool((served > (need[src] + r[:, None]).ravel()[order]).any())
    busy = max(c["busy"] for c in runs)
    return Outcome(G * k, work / (G * k * makespan), busy / makespan, makespan,
                   root_busy=G * (1 + n_later) * costs.block_s / makespan, starved=starved)


# ---------------------------------------------------------------------------------------- search


def grid(lo: int, hi: int) -> list[int]:
    """Powers of 2 and 1.5 times them, from lo to hi."""
    out, p = set(), 1
    while p <= hi:
        out |= {x for x in (p, 3 * p // 2) if lo <= x <= hi}
        p *= 2
    return sorted(out)


def largest(sim, sizes: list[int], ok=lambda o: o.ok) -> tuple[Outcome | None, Outcome | None]:
    """(the largest size that passes, the size above it that fails), doubling then trying 1.5x below.

    Assumes utilisation falls with N. The first is None if even the smallest size fails, the second None
    if the largest passes.
    """
    best = failed = None
    for n in (n for n in sizes if n & (n - 1) == 0):
        out = sim(n)
        if not ok(out):
            failed = out
            break
        best = out
    if failed is not None and best is not None:
        for n in (n for n in sizes if best.ranks < n < failed.ranks):
            out = sim(n)
            if not ok(out):
                failed = out
                break
            best = out
    return best, failed


def knee(sim, lo: int, hi: int, ok=lambda o: o.ok, rel: float = 0.02) -> int:
    """Bisect for the largest N that passes, given that lo passes and hi fails."""
    while hi / lo > 1 + rel and hi - lo > 1:
        mid = int(round((lo * hi) ** 0.5))
        lo, hi = (mid, hi) if ok(sim(mid)) else (lo, mid)
    return lo


def bisected(sim, found: tuple[Outcome | None, Outcome | None], ok=lambda o: o.ok) -> int | None:
    """knee() between what largest() found, or None where it found no bracket."""
    best, failed = found
    return None if best is None or failed is None else knee(sim, best.ranks, failed.ranks, ok)


def with_ceiling(sim, free_sim):
    """sim, its outcome carrying `ceiling`: the utilisation of the same run with coordination free."""
    def run(n: int) -> Outcome:
        out = sim(n)
        out.ceiling = free_sim(n).utilisation
        return out
    return run


def coordination_ok(o: Outcome) -> bool:
    """Coordination costs under 5 % of what the run would reach with free coordinators."""
    return o.utilisation >= TARGET * o.ceiling and not o.starved


# ------------------------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store-s", type=float, default=STORE_S, help="coordinator's cost to store one result")
    ap.add_argument("--dispatch-s", type=float, default=DISPATCH_S,
                    help="cost to take in one message and send the next task")
    ap.add_argument("--block-s", type=float, default=None, help="root's cost per block (default: --dispatch-s)")
    ap.add_argument("--tasks-per-worker", type=int, default=20)
    ap.add_argument("--leader-size", type=int, default=128, help="workers per group leader")
    ap.add_argument("--block", type=int, default=None, help="tasks per block from the root (default: leader size)")
    ap.add_argument("--samples", type=int, default=32, help="groups simulated event by event per size")
    ap.add_argument("--max-ranks", type=int, default=2 ** 24, help="largest size tried")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="4 sampled groups, sizes up to 2^20, only the first table (CI smoke run)")
    args = ap.parse_args(argv)
    if args.block is not None and args.block < args.leader_size:
        ap.error("--block must be at least --leader-size: a first block smaller than the group leaves workers "
                 "waiting on the root")
    if args.quick:
        args.samples, args.max_ranks = 4, min(args.max_ranks, 2 ** 20)
    costs = Costs(args.dispatch_s, args.store_s, args.dispatch_s if args.block_s is None else args.block_s)
    free = Costs(0.0, 0.0, 0.0)
    K, k = args.tasks_per_worker, args.leader_size
    t_start = time.perf_counter()
    print(f"dispatch_s {costs.dispatch_s * 1e6:.0f} us, store_s {costs.store_s * 1e3:.3f} ms, "
          f"block_s {costs.block_s * 1e6:.0f} us; {K} tasks per worker, durations T x log-normal sigma {SIGMA}; "
          f"leader size {k}, blocks of {args.block or k} tasks; utilisation target {TARGET}")
    rows = []
    for T in TASK_S:
        def sim_flat(n, T=T, c=costs):
            return flat(n, T, K, c, seed=args.seed)

        def sim_tree(n, T=T, c=costs):
            return hierarchy(n // k, k, T, K, c, block=args.block, samples=args.samples, seed=args.seed)

        row: dict = {"T": T}
        row["flat"] = largest(sim_flat, grid(16, args.max_ranks))
        row["tree"] = largest(sim_tree, grid(2 * k, args.max_ranks))
        if not args.quick:
            flat_rel = with_ceiling(sim_flat, lambda n, T=T: sim_flat(n, T, free))
            tree_rel = with_ceiling(sim_tree, lambda n, T=T: sim_tree(n, T, free))
            for key in ("flat", "tree"):  # the ceiling at the sizes found, and at the first failing one
                sim = flat_rel if key == "flat" else tree_rel
                row[key] = tuple(None if o is None else sim(o.ranks) for o in row[key])
            row["flat_rel"] = largest(flat_rel, grid(16, args.max_ranks), coordination_ok)
            row["tree_rel"] = largest(tree_rel, grid(2 * k, args.max_ranks), coordination_ok)
            row["flat_knee"] = bisected(flat_rel, row["flat_rel"], coordination_ok)
            row["flat_raw_knee"] = bisected(sim_flat, row["flat"])
            row["flat_above"] = sim_flat(int(round(2 * T / costs.per_result)))
            row["tree_seeds"] = [largest(lambda n, T=T, s=s: hierarchy(n // k, k, T, K, costs, block=args.block,
                                                                        samples=args.samples, seed=s),
                                         grid(2 * k, args.max_ranks)) for s in (args.seed + 1, args.seed + 2)]
        rows.append(row)

    def size(best, fail):
        if best is None:
            return "-" if fail is None else f"<{fail.ranks}"
        return ("" if fail is not None else ">=") + str(best.ranks)

    def ceiling(o):
        return "-" if o.ceiling is None else f"{o.ceiling:.3f}"

    print()
    print("largest N with worker utilisation >= 0.95 (grid of powers of 2 and 1.5x them):")
    print(f"{'T (s)':>6} | {'flat max ranks':>14} {'util':>6} {'free':>6} {'coord busy':>10} | {'hier max ranks':>14} "
          f"{'G':>7} {'leader size':>11} {'util':>6} {'free':>6} {'leader busy':>11} {'root busy':>9}")
    for row in rows:
        (fb, ff), (hb, hf) = row["flat"], row["tree"]
        line = f"{row['T']:>6g} | {size(fb, ff):>14} "
        line += (f"{fb.utilisation:>6.3f} {ceiling(fb):>6} {fb.busy:>10.3f} | " if fb
                 else f"{'-':>6} {'-':>6} {'-':>10} | ")
        line += f"{size(hb, hf):>14} "
        line += (f"{hb.ranks // k:>7} {k:>11} {hb.utilisation:>6.3f} {ceiling(hb):>6} {hb.busy:>11.3f} "
                 f"{hb.root_busy:>9.3f}" if hb else f"{'-':>7} {k:>11} {'-':>6} {'-':>6} {'-':>11} {'-':>9}")
        print(line)
    print("(util: at that size; free: the same run with every coordination cost set to 0, i.e. what the end of "
          f"a {K}-task run alone costs; busy: fraction of the makespan a coordinator is serving)")
    for row in rows:
        hf = row["tree"][1]
        if hf is not None:
            why = ("a group ran dry waiting for the root" if hf.starved else
                   ("" if hf.ceiling is None else f"free-coordination ceiling {hf.ceiling:.3f}, ")
                   + f"leader busy {hf.busy:.3f}, root busy {hf.root_busy:.3f}")
            print(f"  hierarchy, T = {row['T']:g} s: fails at {hf.ranks} ranks ({hf.ranks // k} groups), "
                  f"utilisation {hf.utilisation:.4f}: {why}")
    if not args.quick:
        print("  the hierarchy's max ranks with seeds "
              f"{args.seed + 1} and {args.seed + 2} (other task durations and sampled groups): "
              + "; ".join(f"T = {row['T']:g} s: " + ", ".join(size(*found) for found in row["tree_seeds"])
                          for row in rows))
        print()
        print("what coordination alone limits: largest N with utilisation >= 0.95 x the free-coordination ceiling")
        print(f"{'T (s)':>6} | {'T / (dispatch_s + store_s)':>26} {'flat (grid)':>12} {'flat (bisected)':>16} "
              f"| {'hier (grid)':>12} {'G':>7}")
        for row in rows:
            closed = row["T"] / costs.per_result
            (hb, hf) = row["tree_rel"]
            found = "-" if row["flat_knee"] is None else f"{row['flat_knee']} ({row['flat_knee'] / closed:.2f}x)"
            print(f"{row['T']:>6g} | {closed:>26.0f} {size(*row['flat_rel']):>12} {found:>16} "
                  f"| {size(hb, hf):>12} {(hb.ranks // k if hb else 0):>7}")
        print()
        print("closed form: one coordinator serves one result per c = dispatch_s + store_s, so it keeps ~T / c "
              "ranks busy;\nutilisation ~1 below that (less the end of the run), ~T / (N c) above it:")
        for row in rows:
            closed, above = row["T"] / costs.per_result, row["flat_above"]
            kept = above.ranks * above.utilisation
            print(f"  T = {row['T']:>2g} s: at N = {above.ranks} (2 x T / c) utilisation {above.utilisation:.3f} vs "
                  f"{row['T'] / (above.ranks * costs.per_result):.3f}, ranks kept busy (N x util) "
                  f"{kept:.0f} vs {closed:.0f} ({kept / closed:.3f}x); "
                  + ("" if row["flat_raw_knee"] is None else f"the knee at utilisation >= 0.95 itself: "
                     f"{row['flat_raw_knee']} ({row['flat_raw_knee'] / closed:.2f}x)"))
    print(f"\n({time.perf_counter() - t_start:.1f} s)")
    best = rows[TASK_S.index(1.0)]["flat"][0]
    print(f"coordinator_max_ranks_at_1s: {best.ranks if best is not None else 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
