"""Fair shares, bands, heat caps and the provable lower bound on moves.

The bound is over a class of plans (`lower_bound_dense`): by default those meeting the targets;
a plan's own bound (`plan_lower_bound_dense`) is over the plans whose every node ends no further
from its targets than it does, so no plan ever comes in under the bound it reports, even when a
target is out of reach.

Shares are exact rationals (`Fraction`), water-filled across zones because a zone holds at most
one replica of each partition; every number handed to a solver is an integer derived from them.
Also compiles a `Problem` into the dense integer arrays both solver backends run on (ids mapped to
indexes in sorted order). Imports only coreplane.errors and the model.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import compress
from operator import attrgetter, mul
from typing import NamedTuple

from coreplane.errors import InvalidArgument
from coreplane.placement.model import ALIVE, Assignment, Node, Partition, Problem

__all__ = [
    "Accel",
    "Dense",
    "compile_problem",
    "heat_caps",
    "hotter_than",
    "lower_bound",
    "lower_bound_dense",
    "plan_bands",
    "plan_heat_caps",
    "plan_lower_bound_dense",
    "plan_metrics",
    "water_fill",
]

BAND_LO_PCT = 95
BAND_HI_PCT = 105
HEAT_CAP_PCT = 110


def water_fill(total: Fraction, weights: list[int], caps: list[int]) -> list[Fraction]:
    """Shares s_i = min(cap_i, lam * w_i) summing to `total` (or every cap if they cannot).

    Items are taken in the order of their cap per weight, the index breaking ties, so the result
    depends only on the inputs.
    """
    shares = [Fraction(0)] * len(weights)
    order = sorted(range(len(weights)), key=lambda i: (Fraction(caps[i], weights[i]), i))
    left = total
    weight_left = sum(weights)
    for pos, i in enumerate(order):
        if weight_left == 0:
            break
        fair = left * weights[i] / weight_left
        if caps[i] <= fair:
            shares[i] = Fraction(caps[i])
            left -= caps[i]
            weight_left -= weights[i]
            continue
        for j in order[pos:]:
            shares[j] = left * weights[j] / weight_left
        break
    return shares


def _floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def _floor_pct(x: Fraction, pct: int) -> int:
    """floor(x * pct / 100) in integers (Fraction arithmetic per node is slow at 10k nodes)."""
    return (x.numerator * pct) // (x.denominator * 100)


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


@dataclass(frozen=True)
class Dense:
    """The problem as integer arrays, indexes in sorted-id order; what the backends consume."""

    node_ids: list[str]
    part_ids: list[str]
    zone: list[int]  # node -> zone index (zones in sorted name order)
    zones: int
    elig: list[int]  # 1 if alive (not draining, not dead)
    slots: list[int]
    lo: list[int]  # replica-count band per node (0 for ineligible nodes)
    hi: list[int]
    tq: list[int]  # integer fair count, >= 1: the denominator of a node's fill key
    hcap: list[int]  # floor(1.10 * fair heat share)
    hfair: list[int]  # floor(fair heat share)
    zshare: list[int]  # integer fair count per zone, >= 1
    rf: Sequence[int]  # per partition, sorted-id order (array('q') from the memo)
    heat: Sequence[int]
    split: Sequence[int]  # 1 if the partition is hotter than every node's fair heat share
    off: Sequence[int]  # CSR offsets into rep, length P + 1 (a list or an array('q'))
    rep: Sequence[int]  # current replicas, node indexes ascending per partition
    inflight: int
    budget: int  # -1 when unlimited
    eligible_zones: int
    replicas: int  # sum(rf) and max(rf) (0 without partitions), from the memo
    rf_max: int
    split_ids: tuple[str, ...]  # ids of the partitions flagged in `split`, ascending
    band_first: int = 0  # budget mode spends moves on the nodes nearest their band first
    heat_top: int = 0  # the hottest partition's heat, split candidates included (0 if none)


def _node_shares(
    weights: list[int],
    slots: list[int],
    zone_of: list[int],
    zones: int,
    elig: list[int],
    total: int,
    zone_cap: list[int],
    use_slots: bool,
) -> list[Fraction]:
    """Water-fill `total` across zones (capped by `zone_cap`) then across each zone's nodes.

    Nodes of a zone with the same weight get the same Fraction object when no slot cap binds
    (`_per_share` relies on it only for speed).
    """
    node_count = len(weights)
    zone_w = [0] * zones
    zone_slots = [0] * zones
    members_of: list[list[int]] = [[] for _ in range(zones)]
    for i in range(node_count):
        if elig[i]:
            zone_w[zone_of[i]] += weights[i]
            zone_slots[zone_of[i]] += slots[i]
            members_of[zone_of[i]].append(i)
    live = [z for z in range(zones) if zone_w[z] > 0]
    caps = [min(zone_cap[z], zone_slots[z]) if use_slots else zone_cap[z] for z in live]
    zshares = water_fill(Fraction(total), [zone_w[z] for z in live], caps)
    out = [Fraction(0)] * node_count
    for z, zs in zip(live, zshares, strict=True):
        members = members_of[z]
        num, den, wz = zs.numerator, zs.denominator, zone_w[z]
        if not use_slots or all(slots[i] * wz * den >= num * weights[i] for i in members):
            share_of: dict[int, Fraction] = {}  # one Fraction per distinct weight
            for i in members:  # no slot cap binds: plain weight-proportional shares
                w = weights[i]
                if w not in share_of:
                    share_of[w] = Fraction(num * w, den * wz)
                out[i] = share_of[w]
            continue
        for i, s in zip(
            members,
            water_fill(zs, [weights[i] for i in members], [slots[i] for i in members]),
            strict=True,
        ):
            out[i] = s
    return out


Targets = tuple[int, int, int, int, int]


def _per_share(shares: list[Fraction], derive: Callable[[Fraction], Targets]) -> list[Targets]:
    """`derive` of each share, once per distinct share object.

    `_node_shares` hands the nodes of a zone with one weight the same Fraction, so a thousand
    nodes have a handful of shares: Fraction arithmetic per node was most of a compile. Keyed
    by identity, which is sound while `shares` holds the objects.
    """
    memo: dict[int, Targets] = {}
    out: list[Targets] = []
    for s in shares:
        t = memo.get(id(s))
        if t is None:
            t = memo[id(s)] = derive(s)
        out.append(t)
    return out


def dense_replicas(
    part_ids: list[str], assignment: Mapping[str, tuple[str, ...]], node_idx: dict[str, int]
) -> tuple[list[int], list[int]]:
    """Current replicas as CSR (offsets, node indexes ascending per partition).

    The kernel module has a compiled twin of this loop (`_kernel.dense_replicas`), the one
    O(replicas) step of compiling a problem; tests check both give the same lists.
    """
    off = [0]
    rep: list[int] = []
    get = assignment.get
    index = node_idx.__getitem__
    extend = rep.extend
    append = off.append
    for pid in part_ids:
        cur = get(pid)
        if cur:
            extend(sorted(map(index, cur)))
        append(len(rep))
    return off, rep


Replicas = Callable[
    [list[str], Mapping[str, tuple[str, ...]], dict[str, int]], tuple[list[int], list[int]]
]
Remap = Callable[[Sequence[int], list[int]], Sequence[int]]
Rows = Callable[
    [dict[str, tuple[str, ...]], list[str], list[str], Sequence[int], Sequence[int], Sequence[int]],
    None,
]


def remap_nodes(rep: Sequence[int], remap: list[int]) -> Sequence[int]:
    """Node indexes of a CSR after nodes joined (ids sorted: the map is monotonic)."""
    return [remap[n] for n in rep]


def touched_rows(
    out: dict[str, tuple[str, ...]],
    part_ids: list[str],
    node_ids: list[str],
    moved: Sequence[int],
    off: Sequence[int],
    rep: Sequence[int],
) -> None:
    """Set out[partition id] = final replica node ids for each partition a move touched.

    `out` is written with dict's own methods (an `Assignment` refuses item assignment once it is
    handed out; this is its construction), in ascending partition order.
    """
    dict.update(
        out,
        [
            (part_ids[p], tuple(node_ids[n] for n in rep[off[p] : off[p + 1]]))
            for p in sorted(set(moved))
        ],
    )


def hotter_than(
    heat: Sequence[int], above: int, part_ids: list[str]
) -> tuple[Sequence[int], tuple[str, ...]]:
    """array('q') of 1 where heat > `above`, else 0, and the ids flagged, in order (the kernel
    module has a compiled twin)."""
    flags = array("q", [int(h > above) for h in heat])
    return flags, tuple(compress(part_ids, flags))


def plan_metrics(
    d: Dense, count: Sequence[int], mheat: Sequence[int], off: Sequence[int], rep: Sequence[int]
) -> tuple[int, int, float]:
    """A plan's band violations, nodes over their heat cap and largest heat over fair share.

    From its final replicas per node (`count`), movable heat per node (`mheat`) and assignment
    (CSR `off`, `rep`): a node's heat counts its split candidates' replicas too, read off the
    CSR; its cap is max(heat cap, the hottest partition's heat) (`Metrics.heat_over_cap`).
    """
    heat = list(mheat)
    for pid in d.split_ids:
        p = bisect.bisect_left(d.part_ids, pid)
        for j in range(off[p], off[p + 1]):
            heat[rep[j]] += d.heat[p]
    cap_floor = d.heat_top  # the family's cap: max(1.10 x fair heat, the hottest replica)
    band = 0
    hot = 0
    ratio = 0.0
    for n in range(len(d.node_ids)):
        if not d.elig[n]:
            band += count[n] > 0
            continue
        band += not d.lo[n] <= count[n] <= d.hi[n]
        hot += heat[n] > max(d.hcap[n], cap_floor)
        if d.hfair[n] > 0:
            ratio = max(ratio, heat[n] / d.hfair[n])
    return band, hot, ratio


Metrics3 = Callable[
    [Dense, Sequence[int], Sequence[int], Sequence[int], Sequence[int]], tuple[int, int, float]
]
Hotter = Callable[[Sequence[int], int, list[str]], tuple[Sequence[int], tuple[str, ...]]]
PartsDelta = Callable[
    [tuple[Partition, ...], tuple[Partition, ...], Sequence[int], Sequence[int]],
    tuple[Sequence[int], Sequence[int], int, int, int, int, int] | None,
]
SameItems = Callable[[list[Partition], tuple[Partition, ...]], bool]


class Accel(NamedTuple):
    """The O(P) steps around a solve; the kernel module has compiled twins of each."""

    replicas: Replicas = dense_replicas
    remap: Remap = remap_nodes
    rows: Rows = touched_rows
    metrics: Metrics3 = plan_metrics
    hotter: Hotter = hotter_than
    # kernel only: the partition arrays of a tuple that changed a few partitions (ids kept, in
    # sorted order) from the memo's, else None; and whether a list holds a tuple's own items
    parts_delta: PartsDelta | None = None
    same_items: SameItems | None = None


def _current_replicas(
    problem: Problem,
    node_ids: list[str],
    node_idx: dict[str, int],
    part_ids: list[str],
    accel: Accel,
) -> tuple[Sequence[int], Sequence[int]]:
    """The CSR of the current assignment: the memo a plan left on it, else built (and kept).

    Added nodes only shift indexes, monotonically (ids are sorted), so a memo made before they
    joined is remapped rather than rebuilt, and the remap kept beside it (`dense_grown`).
    """
    assignment = problem.assignment
    memo = assignment.dense if isinstance(assignment, Assignment) else None
    if memo is not None and (memo[1] is part_ids or memo[1] == part_ids):
        old_nodes, _, off, rep = memo
        if memo[1] is not part_ids and isinstance(assignment, Assignment):
            # equal ids in another list (the partitions memo was remade): keep this list, so
            # the next compile finds it by identity instead of comparing every id again
            assignment.dense = (old_nodes, part_ids, off, rep)
        if old_nodes == node_ids:
            return off, rep
        grown = assignment.dense_grown if isinstance(assignment, Assignment) else None
        if grown is not None and grown[0] == node_ids and grown[2] is off:
            return grown[2], grown[3]
        if all(nid in node_idx for nid in old_nodes):
            rep = accel.remap(rep, [node_idx[nid] for nid in old_nodes])
            if isinstance(assignment, Assignment):
                assignment.dense_grown = (node_ids, part_ids, off, rep)
            return off, rep
    off, rep = accel.replicas(part_ids, assignment, node_idx)
    if isinstance(assignment, Assignment):
        assignment.dense = (node_ids, part_ids, off, rep)
    return off, rep


PartitionArrays = tuple[list[str], Sequence[int], Sequence[int], int, int, int, int, int]
# One-entry memo of the per-partition arrays, keyed by the identity of the (immutable) partitions
# tuple: node events (dead, drain, add) reuse the same tuple, and re-deriving 100k partitions'
# arrays would cost more than the solve. The value is a pure function of the key. The flag says
# the tuple was already in sorted-id order (then `Accel.parts_delta` may derive the arrays of a
# tuple that differs from it in a few partitions with the same ids: a heat shift, an RF change).
_PARTS_MEMO: list[tuple[tuple[Partition, ...], PartitionArrays, bool]] = []
_SPLIT_MEMO: list[tuple[tuple[Partition, ...], int, tuple[Sequence[int], tuple[str, ...]]]] = []


def _partition_arrays(partitions: tuple[Partition, ...], accel: Accel) -> PartitionArrays:
    """Ids, RF and heat in sorted-id order, the totals the shares need, the top RF and heat."""
    memo = _PARTS_MEMO[:1]
    if memo and memo[0][0] is partitions:
        return memo[0][1]
    if memo and memo[0][2] and accel.parts_delta is not None:
        old, prev, _ = memo[0]
        got = accel.parts_delta(old, partitions, prev[1], prev[2])
        if got is not None:  # same ids in the same (sorted) order: the same id list serves
            out = (prev[0], *got)
            _PARTS_MEMO[:] = [(partitions, out, True)]
            return out
    parts = sorted(partitions, key=attrgetter("id"))
    # array('q'): the kernel copies it with one memcpy instead of converting 100k ints.
    rf = array("q", map(attrgetter("rf"), parts))
    heat = array("q", map(attrgetter("heat"), parts))
    out = (
        list(map(attrgetter("id"), parts)),
        rf,
        heat,
        sum(rf),
        sum(map(mul, heat, rf)),
        sum(heat),
        max(rf, default=0),
        max(heat, default=0),
    )
    in_order = accel.same_items is not None and accel.same_items(parts, partitions)
    _PARTS_MEMO[:] = [(partitions, out, in_order)]
    return out


def _split_flags(
    partitions: tuple[Partition, ...],
    part_ids: list[str],
    heat: Sequence[int],
    above: int,
    accel: Accel,
) -> tuple[Sequence[int], tuple[str, ...]]:
    """1 for partitions hotter than `above` (every node's fair heat share), else 0; their ids.

    Memoized on the partitions and `above`, which moves with the nodes' fair shares: a node
    event usually misses, and the flags are then made again over every partition."""
    memo = _SPLIT_MEMO[:1]
    if memo and memo[0][0] is partitions and memo[0][1] == above:
        return memo[0][2]
    out = accel.hotter(heat, above, part_ids)
    _SPLIT_MEMO[:] = [(partitions, above, out)]
    return out


# One-entry memo of what a compile derives from the nodes, keyed by the identity of the
# (immutable) nodes tuple and the partition totals the shares water-fill: partition events (heat
# shift, RF change) and budget variants reuse the tuple, and the Fraction shares of a hundred
# nodes cost a fifth of a P=10k budget solve in the kernel. The value is a pure function of the
# key; its lists are shared by the Dense made from it, which nothing writes.
class NodeArrays(NamedTuple):
    """What `compile_problem` derives from the nodes alone (and the partition totals)."""

    node_ids: list[str]
    node_idx: dict[str, int]
    zone_of: list[int]
    zones: int
    elig: list[int]
    slots: list[int]
    lo: list[int]
    hi: list[int]
    tq: list[int]
    hcap: list[int]
    hfair: list[int]
    zshare: list[int]
    split_above: int
    eligible_zones: int


_NODES_MEMO: list[tuple[tuple[Node, ...], tuple[int, int, int, int], NodeArrays]] = []


def _node_arrays(
    nodes_in: tuple[Node, ...], replicas_total: int, parts: int, heat_total: int, heat_sum: int
) -> NodeArrays:
    """Ids, zones, eligibility, slots, bands, heat targets and zone shares of the nodes."""
    key = (replicas_total, parts, heat_total, heat_sum)
    memo = _NODES_MEMO[:1]
    if memo and memo[0][0] is nodes_in and memo[0][1] == key:
        return memo[0][2]
    node_ids = sorted(n.id for n in nodes_in)
    node_idx = {nid: i for i, nid in enumerate(node_ids)}
    by_id = {n.id: n for n in nodes_in}
    nodes = [by_id[nid] for nid in node_ids]
    zone_names = sorted({n.zone for n in nodes_in})
    zone_idx = {z: i for i, z in enumerate(zone_names)}
    zone_of = [zone_idx[n.zone] for n in nodes]
    elig = [1 if n.state == ALIVE else 0 for n in nodes]
    slots = [n.slots for n in nodes]
    weights = [n.weight for n in nodes]
    zones = len(zone_names)
    count_sh = _node_shares(
        weights, slots, zone_of, zones, elig, replicas_total, [parts] * zones, True
    )
    heat_sh = _node_shares(
        weights, slots, zone_of, zones, elig, heat_total, [heat_sum] * zones, False
    )
    count_t = _per_share(
        count_sh,
        lambda s: (
            _floor_pct(s, BAND_LO_PCT),
            -_floor_pct(-s, BAND_HI_PCT),
            max(1, _ceil(s)),
            s.numerator,
            s.denominator,
        ),
    )
    heat_t = _per_share(heat_sh, lambda s: (_floor_pct(s, HEAT_CAP_PCT), _floor(s), 0, 0, 0))
    lo = [t[0] if e else 0 for t, e in zip(count_t, elig, strict=True)]
    hi = [min(t[1], sl) if e else 0 for t, e, sl in zip(count_t, elig, slots, strict=True)]
    tq = [t[2] for t in count_t]
    hcap = [t[0] for t in heat_t]
    hfair = [t[1] for t in heat_t]
    # Per zone, numerators summed per denominator (exact), then the few sums added as Fractions.
    by_den: list[dict[int, int]] = [{} for _ in range(zones)]
    for i, t in enumerate(count_t):
        sums = by_den[zone_of[i]]
        sums[t[4]] = sums.get(t[4], 0) + t[3]
    zcount = [sum((Fraction(n, den) for den, n in sums.items()), Fraction(0)) for sums in by_den]
    zshare = [max(1, _ceil(s)) for s in zcount]
    # h > share <=> h > floor(share) for an integer h: compare ints, not Fractions, per partition.
    # floor is monotonic: the floor of the largest share is the largest floor.
    split_above = max((f for f, e in zip(hfair, elig, strict=True) if e), default=0)
    eligible_zones = len({zone_of[i] for i in range(len(node_ids)) if elig[i]})
    out = NodeArrays(
        node_ids, node_idx, zone_of, zones, elig, slots, lo, hi, tq, hcap, hfair, zshare,
        split_above, eligible_zones,
    )  # fmt: skip
    _NODES_MEMO[:] = [(nodes_in, key, out)]
    return out


def compile_problem(problem: Problem, accel: Accel | None = None) -> Dense:
    """Map ids to dense indexes and derive every integer target the solvers use.

    `accel` swaps in the compiled helpers (when the kernel backend runs); same lists either way.
    """
    accel = accel or Accel()
    part_ids, rf, heat, replicas_total, heat_total, heat_sum, rf_max, heat_top = _partition_arrays(
        problem.partitions, accel
    )
    na = _node_arrays(problem.nodes, replicas_total, len(part_ids), heat_total, heat_sum)
    split, split_ids = _split_flags(problem.partitions, part_ids, heat, na.split_above, accel)
    off, rep = _current_replicas(problem, na.node_ids, na.node_idx, part_ids, accel)
    budget = -1 if problem.moves_max is None else problem.moves_max
    return Dense(
        na.node_ids,
        part_ids,
        na.zone_of,
        na.zones,
        na.elig,
        na.slots,
        na.lo,
        na.hi,
        na.tq,
        na.hcap,
        na.hfair,
        na.zshare,
        rf,
        heat,
        split,
        off,
        rep,
        problem.moves_in_flight_per_node,
        budget,
        na.eligible_zones,
        replicas_total,
        rf_max,
        split_ids,
        int(budget >= 0 and problem.budget_objective == "out_of_band"),
        heat_top,
    )


def hottest_movable(d: Dense) -> int:
    """The hottest replica a plan may move (split candidates are reported, never moved), or 0."""
    return max(compress(d.heat, [not s for s in d.split]), default=0)


def heat_caps(d: Dense, hottest: int) -> list[int]:
    """The heat target per node: max(1.10 x fair share, the hottest movable replica)."""
    return [max(c, hottest) for c in d.hcap]


def plan_heat_caps(d: Dense, mheat: Sequence[int], hottest: int) -> list[int]:
    """Each node's heat cap raised to the plan's final movable heat `mheat` where it ended over.

    Per node, as `plan_bands` does for counts: a node the plan could not bring under its cap
    gets a cap of what it reached, every other node keeps its target cap.
    """
    return [max(c, m) for c, m in zip(heat_caps(d, hottest), mheat, strict=True)]


def plan_bands(d: Dense, count: Sequence[int]) -> tuple[list[int], list[int]]:
    """Each node's band widened to take in the plan's final replica count `count`."""
    lo = [min(b, c) for b, c in zip(d.lo, count, strict=True)]
    hi = [max(b, c) for b, c in zip(d.hi, count, strict=True)]
    return lo, hi


def _heat_leavers(d: Dense, caps: dict[int, int]) -> dict[int, int]:
    """Per node over its cap: the fewest of its hottest replicas whose removal brings it under."""
    heats: dict[int, list[int]] = {n: [] for n in caps}
    for p in range(len(d.rf)):
        if d.split[p]:
            continue
        for n in d.rep[d.off[p] : d.off[p + 1]]:
            if n in heats:
                heats[n].append(d.heat[p])
    out: dict[int, int] = {}
    for n, cap in caps.items():
        hs = sorted(heats[n], reverse=True)
        total = sum(hs)
        k = 0
        while total > cap:
            total -= hs[k]
            k += 1
        out[n] = k
    return out


def lower_bound_dense(
    d: Dense,
    caps: Sequence[int] | None = None,
    lo: Sequence[int] | None = None,
    hi: Sequence[int] | None = None,
) -> int:
    """max(replicas that must leave nodes, replicas that must arrive): each move does one of each.

    The bound holds over every plan that ends with each eligible node's replica count in
    [lo, hi] and its movable heat (split candidates aside: they are reported, not moved) at or
    below its cap; by default the targets: the band, and max(1.10 x fair share, hottest movable
    replica) as the heat cap (`heat_caps`). Why each term holds for such a plan:

    Node view. A node keeps some of its current replicas and gains others; every current
    replica it does not keep is the source of a move. A dead or draining node keeps none. A node
    ending at most `hi` keeps at most `hi` of its replicas: the excess leaves. A node ending at
    or below its heat cap keeps a subset of its replicas whose heat is at most the cap (heat is
    never negative), so at least the fewest hottest replicas whose removal brings it under
    leave. A node ending at least `lo` gains the shortfall. Partition view: replicas on dead or
    draining nodes, same-zone duplicates and replicas beyond RF must leave; missing replicas
    must arrive. Each view alone is a valid bound on leaves (L) and arrivals (A).

    A move is a relocation (one leave, one arrival), an add (arrival only: RF raised, bootstrap)
    or a drop (leave only: RF lowered). A partition with k replicas too many needs at least k
    drops, one with k too few at least k adds, so moves >= drops + A >= D_min + A and
    moves >= adds + L >= A_min + L: the bound is the larger of the two (it is max(L, A) when
    RF does not change).

    A plan's own bound (`plan_lower_bound_dense`) passes caps and bands the plan itself meets,
    so its moves are never below it, whether or not the targets can be met. Caps and bands are
    per node and only ever widen the targets: a node the plan leaves within its targets still
    counts every move it forces.
    """
    n_nodes = len(d.zone)
    count = [0] * n_nodes
    nheat = [0] * n_nodes
    part_leave = 0
    part_arrive = 0
    drops = 0
    adds = 0
    for p in range(len(d.rf)):
        zones_seen: set[int] = set()
        valid = 0
        reps = d.rep[d.off[p] : d.off[p + 1]]
        drops += max(0, len(reps) - d.rf[p])
        adds += max(0, d.rf[p] - len(reps))
        h = 0 if d.split[p] else d.heat[p]
        for n in reps:
            count[n] += 1
            nheat[n] += h
            if d.elig[n] and d.zone[n] not in zones_seen:
                zones_seen.add(d.zone[n])
                valid += 1
        kept = min(valid, d.rf[p])
        part_leave += len(reps) - kept
        part_arrive += d.rf[p] - kept
    if caps is None:
        caps = heat_caps(d, hottest_movable(d))
    lo = d.lo if lo is None else lo
    hi = d.hi if hi is None else hi
    over = {n: caps[n] for n in range(n_nodes) if d.elig[n] and nheat[n] > caps[n]}
    heat_leave = _heat_leavers(d, over) if over else {}
    node_leave = 0
    node_arrive = 0
    for n in range(n_nodes):
        if not d.elig[n]:
            node_leave += count[n]
            continue
        node_leave += max(0, count[n] - hi[n], heat_leave.get(n, 0))
        node_arrive += max(0, lo[n] - count[n])
    return max(drops + max(node_arrive, part_arrive), adds + max(node_leave, part_leave))


def plan_lower_bound_dense(d: Dense, count: Sequence[int], mheat: Sequence[int]) -> int:
    """The bound for a plan that ends with `count` replicas and `mheat` movable heat per node.

    Targets relaxed per node to what the plan reached, never globally: lo'_n = min(lo_n,
    count_n), hi'_n = max(hi_n, count_n) (`plan_bands`) and cap'_n = max(cap_n, mheat_n)
    (`plan_heat_caps`), so only a node that ended outside a target has it widened, and only as
    far as the plan took it. Sound: `lower_bound_dense` holds over every plan ending with each
    eligible node's count in [lo'_n, hi'_n] and its movable heat at or below cap'_n; the plan is
    such a plan, so its moves are never below this, even when a target cannot be met. Tight:
    when the plan meets both targets, lo', hi' and cap' are the targets and this is
    `lower_bound_dense(d)` exactly; when one node cannot get under its heat cap, the heat moves
    forced on every other node still count. What `Metrics.lower_bound` reports for a feasible
    plan.
    """
    return lower_bound_dense(d, plan_heat_caps(d, mheat, hottest_movable(d)), *plan_bands(d, count))


def hard_lower_bound_dense(d: Dense) -> int:
    """The part of the bound that only the hard constraints force (dead nodes, RF, zones)."""
    part_leave = 0
    part_arrive = 0
    for p in range(len(d.rf)):
        zones_seen: set[int] = set()
        reps = d.rep[d.off[p] : d.off[p + 1]]
        for n in reps:
            if d.elig[n]:
                zones_seen.add(d.zone[n])
        kept = min(len(zones_seen), d.rf[p])
        part_leave += len(reps) - kept
        part_arrive += d.rf[p] - kept
    return max(part_leave, part_arrive)


def lower_bound(problem: Problem, *, reached: Mapping[str, tuple[str, ...]] | None = None) -> int:
    """The provable minimum number of moves for `problem` (see `lower_bound_dense`).

    By default over plans meeting the targets (band and heat cap). `reached=` an assignment the
    problem can end in (a plan's): the bound over every plan whose nodes each end no further
    outside their band and heat cap than in `reached` (`plan_lower_bound_dense`); a plan's moves
    are never below it and it is what the plan's `metrics.lower_bound` reports.
    """
    d = compile_problem(problem)
    if reached is None:
        return lower_bound_dense(d)
    return plan_lower_bound_dense(d, *_reached_load(d, reached))


def _reached_load(d: Dense, reached: Mapping[str, tuple[str, ...]]) -> tuple[list[int], list[int]]:
    """Replicas and movable heat per node (dense indexes) of the assignment `reached`."""
    node_idx = {nid: i for i, nid in enumerate(d.node_ids)}
    part_idx = {pid: p for p, pid in enumerate(d.part_ids)}
    count = [0] * len(d.node_ids)
    mheat = [0] * len(d.node_ids)
    for pid in sorted(reached):
        if pid not in part_idx:
            raise InvalidArgument("reached", f"unknown partition id {pid!r}")
        p = part_idx[pid]
        for nid in reached[pid]:
            if nid not in node_idx:
                raise InvalidArgument("reached", f"unknown node id {nid!r} for {pid!r}")
            count[node_idx[nid]] += 1
            mheat[node_idx[nid]] += 0 if d.split[p] else d.heat[p]
    return count, mheat
