"""Hypothesis strategies for AttnCase, capability-aware, plus the edge corpus always tried first.

Every drawn case lies inside the backend's claims (a case outside them would prove nothing), and
its work B·H·Sq·Skv·D stays under a budget so the CPU suite finishes in minutes: the bound is on
the product, not on each axis, so long sequences still appear with few heads and short queries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from attnparity.backends.base import Capabilities
from .cases import AttnCase

#: Default bound on B·H·Sq·Skv·D per example (the fp64 reference dominates the cost).
WORK_BUDGET = 2 ** 21

EDGE_SEQS = (1, 2, 3, 15, 17, 97, 113, 127, 129, 192, 320, 1023, 1025)  # 192, 320: ≡ 64 mod 128
#: 96 and 192 are kernel template sizes of their own (flash-attn, cuDNN); 288 and 512 are tried
#: only where a backend claims head_dims above 256.
EDGE_HEAD_DIMS = (9, 21, 40, 59, 64, 72, 80, 96, 111, 128, 160, 192, 203, 256, 288, 512)
EDGE_HEADS = (3, 5, 12)
SMALL_HEADS = (1, 2, 3, 4, 5, 6, 8, 12)

#: Real diffusion attention: the real head_dim and key length, with a slice of queries, and the real
#: head count where the case fits WORK_BUDGET, else two heads (the full shape would cost gigabytes
#: in fp64; every query row and head reduces over the same key length, so the slice keeps what a
#: kernel's blocking sees). With the real heads a slice has more heads than queries, as a short
#: text-token sequence does: a kernel that mixes the H and S axes shows there. (name, heads, head_dim, keys)
DIFFUSION_SHAPES = (
    ("sd15-4096", 8, 40, 4096), ("sd15-1024", 8, 80, 1024), ("sd15-256", 8, 160, 256),
    ("sd15-cross77", 8, 40, 77), ("sd21-1024", 5, 64, 1024), ("sdxl-4096", 10, 64, 4096),
    ("sdxl-1024", 20, 64, 1024), ("pixart-4096", 16, 72, 4096), ("pixart-cross120", 16, 72, 120),
    ("sd3-joint4429", 24, 64, 4429), ("flux-joint4608", 24, 128, 4608),
)
DIFFUSION_QUERY_SLICE = 5

#: Sq and Skv both long: the non-split-KV paths of fused kernels (one query block per program over
#: every key block) start where both pass about a thousand. Such a case cannot fit WORK_BUDGET at any
#: real head_dim, so it has its own bound, with B = H = 1 and head_dim 8 (else the smallest claimed); about one
#: drawn forward example in LONG_PAIR_ODDS is one, beside its corpus case.
LONG_PAIR_WORK = 2 ** 24
LONG_PAIR_SEQS = (1100, 1400)
LONG_PAIR_ODDS = 24
#: The mask layouts of the case space (cases.MaskDims), classic first: what hypothesis shrinks to.
MASK_DIMS = ("B1", "BH", "1H", "11", "H", "1", "")
#: V's standard deviation per dtype: fp16 itself overflows beyond ~6e4 (a correct fp16 kernel
#: could not hold such values), bf16 and fp32 go beyond fp16's range both ways.
V_SCALES = {"fp16": (1e-3, 1e2), "bf16": (1e-6, 1e-3, 1e3, 1e5), "fp32": (1e-6, 1e-3, 1e3, 1e5)}


def _kv_heads_for(heads: int, caps: Capabilities) -> list[int]:
    if not caps.gqa:
        return [heads]
    return [d for d in range(1, heads + 1) if heads % d == 0]


def _head_dims(caps: Capabilities) -> st.SearchStrategy[int]:
    edge = [d for d in EDGE_HEAD_DIMS if caps.supports_head_dim(d)]
    drawn = st.integers(1, 256).filter(caps.supports_head_dim)
    return st.one_of(st.sampled_from(edge), drawn) if edge else drawn


def _mask_choices(caps: Capabilities) -> list[tuple[str, str]]:
    kinds = [("none", "bool")]
    for mask_type in sorted(caps.masks):
        kinds += [(m, mask_type) for m in ("random", "padding", "dead-rows")]
    return kinds


def _long_pair(caps: Capabilities) -> tuple[int, int] | None:
    """(head_dim, longest Sq = Skv) for a long-pair case inside ``caps``, or None if none fits."""
    # 8 first: the smallest head_dim real kernels are built for; smaller ones only where 8 is not claimed.
    dims = [d for d in (8, 16, 4, 2, 1, 32) if caps.supports_head_dim(d)]
    if not dims:
        return None
    longest = int((LONG_PAIR_WORK // dims[0]) ** 0.5)
    if longest <= LONG_PAIR_SEQS[0] or (caps.max_seq is not None and caps.max_seq <= LONG_PAIR_SEQS[0]):
        return None
    return dims[0], min(longest, LONG_PAIR_SEQS[1], caps.max_seq or LONG_PAIR_SEQS[1])


@st.composite
def attn_cases(draw: Any, caps: Capabilities, dtype: str, device: str = "cpu",
               budget: int = WORK_BUDGET) -> AttnCase:
    """One case inside ``caps`` for ``dtype`` on ``device`` with work <= budget (long pairs:
    LONG_PAIR_WORK)."""
    heads = draw(st.sampled_from(SMALL_HEADS))
    kv_heads = draw(st.sampled_from(_kv_heads_for(heads, caps)))
    head_dim = draw(_head_dims(caps))
    batch = draw(st.integers(1, 3))
    room = max(1, budget // (batch * heads * head_dim))  # what is left for Sq·Skv
    seq_cap = min(1100, room)
    edge = [s for s in EDGE_SEQS if s <= seq_cap]
    sq = draw(st.one_of(st.sampled_from(edge), st.integers(1, min(300, seq_cap))))
    skv_cap = max(1, min(1100, room // sq))
    edge_kv = [s for s in EDGE_SEQS if s <= skv_cap]
    skv = draw(st.one_of(st.sampled_from(edge_kv), st.integers(1, min(300, skv_cap)))) if edge_kv else 1
    long_pair = _long_pair(caps)
    if long_pair is not None and draw(st.integers(0, LONG_PAIR_ODDS - 1)) == LONG_PAIR_ODDS - 1:
        head_dim, longest = long_pair
        batch = heads = kv_heads = 1
        sq = draw(st.integers(LONG_PAIR_SEQS[0] + 1, longest))
        skv = draw(st.integers(LONG_PAIR_SEQS[0] + 1, min(longest, LONG_PAIR_WORK // (head_dim * sq))))
    mask, mask_type = draw(st.sampled_from(_mask_choices(caps)))
    masked_value = draw(st.sampled_from(["-inf", "min", "-1e4"])) if mask_type == "float" and mask != "none" else "-inf"
    mask_dims, mask_layout, pad_side = "B1", "contiguous", "right"
    if mask != "none":
        mask_dims = draw(st.sampled_from(MASK_DIMS))
        mask_layout = draw(st.sampled_from(["contiguous", "contiguous", "expanded", "sliced"]))
        pad_side = draw(st.sampled_from(["right", "left"])) if mask == "padding" else "right"
    causal = draw(st.sampled_from([None, caps.causal_mode])) if caps.causal_mode else None
    scale = draw(st.one_of(st.none(), st.sampled_from([1.0, 0.5, 0.05]), st.floats(0.01, 2.0)))
    # Peaked softmax (large magnitude) and near-uniform softmax (small) stress different paths;
    # magnitude 6 with D up to 256 gives logits in the hundreds ("very negative logits" included).
    magnitude = draw(st.sampled_from([1.0, 1.0, 0.1, 3.0, 6.0]))
    v_scale = draw(st.sampled_from((1.0, 1.0, 1.0) + V_SCALES.get(dtype, ())))
    # Keys with a common per-channel offset or outlier channels (where INT8/FP8 quantised kernels
    # lose precision), kept at magnitude <= 1 so the logits stay in the range the others explore.
    k_offset, k_outliers = 0.0, 0
    if magnitude <= 1.0:
        k_offset = draw(st.sampled_from([0.0, 0.0, 0.0, 4.0, 16.0]))
        k_outliers = draw(st.sampled_from([0, 0, 0, 2, 4]))
    layout = draw(st.sampled_from(["contiguous", "transposed", "expanded", "packed"]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return AttnCase(batch=batch, heads=heads, kv_heads=kv_heads, sq=sq, skv=skv, head_dim=head_dim,
                    dtype=dtype, mask=mask, mask_type=mask_type, masked_value=masked_value, causal=causal,
                    scale=scale, magnitude=magnitude, layout=layout, seed=seed, device=device,
                    mask_dims=mask_dims, mask_layout=mask_layout, pad_side=pad_side, v_scale=v_scale,
                    k_offset=k_offset, k_outliers=k_outliers)


def class_corpus(dtype: str, device: str = "cpu", caps: Capabilities | None = None) -> dict[str, AttnCase]:
    """One case per class of the case space that the first corpus did not hold (issue 13), by name:
    every run meets each of them at least once. ``caps`` picks the long pair's head_dim."""
    base = AttnCase(dtype=dtype, device=device, seed=1234)
    masked = base.with_(batch=2, heads=4, kv_heads=2, sq=33, skv=65, head_dim=40, mask="random", mask_type="float",
                        masked_value="-inf")
    long_dim, longest = _long_pair(caps) if caps is not None and _long_pair(caps) else (8, 1400)
    big_v = max(V_SCALES.get(dtype, (1.0,)))
    return {
        "mask 2-D (Sq, Skv)": masked.with_(mask_dims="", mask_type="bool"),
        "mask 3-D (H, Sq, Skv) per head": masked.with_(mask_dims="H"),
        "mask per head, full batch (B, H, Sq, Skv), ALiBi": masked.with_(mask_dims="BH"),
        "mask per head, broadcast batch (1, H, Sq, Skv)": masked.with_(mask_dims="1H", mask_type="bool"),
        "mask broadcast over batch and heads (1, 1, Sq, Skv)": masked.with_(mask_dims="11"),
        "mask stride-0 expand of (B, 1, 1, Skv) padding": masked.with_(mask="padding", mask_layout="expanded",
                                                                         mask_type="bool"),
        "mask stride-0 expand of per-head (1, H, Sq, Skv)": masked.with_(mask_dims="1H", mask_layout="expanded"),
        "mask non-contiguous slice": masked.with_(mask_dims="BH", mask_layout="sliced", mask_type="bool"),
        "left padding": masked.with_(mask="padding", pad_side="left"),
        "empty rows, per head": masked.with_(mask="dead-rows", mask_dims="BH", mask_type="bool"),
        "V beyond fp16's range (or at its edge in fp16)": base.with_(heads=2, sq=17, skv=65, head_dim=64, v_scale=big_v),
        "V tiny": base.with_(heads=2, sq=17, skv=65, head_dim=64, v_scale=min(V_SCALES.get(dtype, (1.0,)))),
        "keys with a common offset": base.with_(heads=2, sq=33, skv=129, head_dim=64, k_offset=16.0),
        "keys with outlier channels": base.with_(heads=2, sq=33, skv=129, head_dim=64, k_outliers=2),
        "keys with offset and outlier channels": base.with_(heads=2, sq=33, skv=129, head_dim=64, k_offset=4.0,
                                                           k_outliers=4),
        "Sq and Skv both long": base.with_(sq=longest - 37, skv=longest, head_dim=long_dim),
        "head_dim 96": base.with_(heads=2, sq=17, skv=97, head_dim=96),
        "head_dim 192": base.with_(heads=2, sq=17, skv=97, head_dim=192),
        "head_dim above 256": base.with_(heads=2, sq=17, skv=97, head_dim=288),
        "packed QKV (storage offsets)": base.with_(batch=2, heads=4, kv_heads=2, sq=47, skv=47, head_dim=40,
                                                  layout="packed"),
        "packed KV, Sq != Skv": base.with_(batch=2, heads=4, sq=31, skv=77, head_dim=40, layout="packed"),
    }


def edge_corpus(caps: Capabilities, dtype: str, device: str = "cpu") -> list[AttnCase]:
    """The cases always tried (hypothesis @example), kept to those inside ``caps``."""
    base = AttnCase(dtype=dtype, device=device, seed=1234)
    corpus: list[AttnCase] = []
    # Sequence-length edges: non-multiples of block sizes, ≡ 64 mod 128, Sq != Skv. At head_dim 32,
    # or where that is not claimed the first claimed edge head_dim (else the edges would be lost).
    seq_dim = next((d for d in (32, *EDGE_HEAD_DIMS) if caps.supports_head_dim(d)), 32)
    for s in EDGE_SEQS:
        corpus.append(base.with_(batch=2, heads=2, sq=min(s, 33), skv=s, head_dim=seq_dim))
    corpus.append(base.with_(sq=129, skv=127, head_dim=64, heads=3))
    # Head-dim edges, including odd and > 128 sizes.
    for d in EDGE_HEAD_DIMS:
        corpus.append(base.with_(heads=2, sq=17, skv=97, head_dim=d))
    for h in EDGE_HEADS:
        corpus.append(base.with_(heads=h, kv_heads=1, sq=15, skv=113, head_dim=40))
    # Masks: each kind and type, bottom/top causal with Sq != Skv, big logits, layouts.
    for mask_type in ("bool", "float"):
        for mask in ("random", "padding", "dead-rows"):
            corpus.append(base.with_(batch=2, heads=4, kv_heads=2, sq=33, skv=65, head_dim=40, mask=mask,
                                     mask_type=mask_type, masked_value="min" if mask_type == "float" else "-inf"))
    for causal in ("top-left", "bottom-right"):
        corpus.append(base.with_(heads=2, sq=17, skv=65, head_dim=64, causal=causal))
        corpus.append(base.with_(heads=2, sq=65, skv=17, head_dim=64, causal=causal))
    corpus.append(base.with_(heads=2, sq=64, skv=64, head_dim=64, magnitude=6.0))
    corpus.append(base.with_(batch=3, heads=4, sq=31, skv=47, head_dim=40, layout="transposed"))
    corpus.append(base.with_(batch=3, heads=4, sq=31, skv=47, head_dim=40, layout="expanded"))
    corpus.append(base.with_(heads=4, sq=20, skv=70, head_dim=72, scale=1.0))
    # The classes of issue 13: mask ranks and layouts, value ranges, long pairs, packed views.
    corpus.extend(class_corpus(dtype, device, caps).values())
    # Real diffusion shapes: every key, a slice of queries (DIFFUSION_SHAPES says which heads).
    for _, heads, d, keys in DIFFUSION_SHAPES:
        heads = heads if heads * DIFFUSION_QUERY_SLICE * keys * d <= WORK_BUDGET else 2
        corpus.append(base.with_(batch=1, heads=heads, kv_heads=heads, sq=DIFFUSION_QUERY_SLICE, skv=keys, head_dim=d))
    fitted = [f for c in corpus if (f := fit(c, caps)) is not None]
    return list(dict.fromkeys(fitted))  # the class cases repeat some edges (head_dim 96, 192, 288)


# -- structures: what a compiled backend compiles a graph for ----------------------------------------
def structure(case: AttnCase) -> tuple[Any, ...]:
    """The structure of a case, as torch.compile with dynamic shapes sees it (backends/compiled.py):
    cases of one structure run one compiled graph, at any other sizes and values.

    dtype; the scale, a constant of the graph (1/sqrt(D) when None: one per head_dim); the mask
    kind (none, bool, float); causal; GQA; and which of B, H, Hkv, Sq, Skv are 1. A backend that
    compiles less per structure (SDPA's own default scale) only shares graphs between them."""
    scale = ("1/sqrt(D)", case.head_dim) if case.scale is None else ("scale", float(case.scale))
    return (case.dtype, scale, case.mask_tensor_kind, case.causal, case.kv_heads != case.heads,
            tuple(n == 1 for n in (case.batch, case.heads, case.kv_heads, case.sq, case.skv)))


#: The axes whose every value an item's first structures cover: what changes the graph's code most
#: (the mask tensor and its kind, the causal mask, the KV-head expansion), and a mask over more than
#: one block (where a block-sparse kernel such as flex's skips or splits blocks: with few structures
#: and no such axis, every masked structure could be a one-block one).
PRIMARY_AXES = ("mask", "causal", "gqa", "masked long")


#: A sequence longer than this spans more than one block of the usual tile sizes (flex's BlockMask
#: blocks are 128, backends/flex.BLOCK; check may not import backends' modules): the "long" axis.
ONE_BLOCK = 128
#: Keys of a masked neighbour beyond one block: two and a half blocks (the last one partial).
LONG_MASKED_KEYS = 320


def _axes(case: AttnCase) -> frozenset[tuple[str, Any]]:
    """The axis values a case covers: default or given scale, mask kind, causal, GQA, a batch of 1,
    another size of 1 (a head count, a sequence length or none: one axis, so that these rarer
    corners do not outweigh the others), and a sequence beyond one block. Which D or which given
    scale only changes a constant of the graph; draws vary D freely under a given scale."""
    unit = "seq" if 1 in (case.sq, case.skv) else "heads" if 1 in (case.heads, case.kv_heads) else "none"
    long = max(case.sq, case.skv) > ONE_BLOCK
    return frozenset({("scale", "1/sqrt(D)" if case.scale is None else "scale"), ("mask", case.mask_tensor_kind),
                      ("causal", case.causal), ("gqa", case.kv_heads != case.heads), ("B=1", case.batch == 1),
                      ("size 1", unit), ("long", long), ("masked long", long and case.mask != "none")})


def neighbours(case: AttnCase, caps: Capabilities) -> list[AttnCase]:
    """``case`` changed along one structure axis, kept to ``caps``: as many KV heads as query heads
    (MHA) or half as many (GQA), causal on or off, a batch of 1 or 2, a given scale or the default,
    and a masked case's keys beyond one block. Candidates for structures the corpus has no case of (a
    masked causal case, a masked MHA one, a mask over several blocks)."""
    out = [case.with_(kv_heads=case.heads), case.with_(causal=None if case.causal else caps.causal_mode),
           case.with_(batch=2 if case.batch == 1 else 1), case.with_(scale=1.0 if case.scale is None else None)]
    if case.heads % 2 == 0 and case.kv_heads == case.heads:
        out.append(case.with_(kv_heads=case.heads // 2))
    if case.mask != "none" and max(case.sq, case.skv) <= ONE_BLOCK:  # the corpus masks within one block
        out.append(case.with_(skv=LONG_MASKED_KEYS))
    return [c for c in out if c.outside(caps) is None]


StructureKey = Callable[[AttnCase], tuple[Any, ...]]


def structure_with(more: StructureKey | None) -> StructureKey:
    """The structure key of a backend whose code is specialized on ``more`` besides ``structure``
    (Backend.structure_key; backends define only the extra fields, as they may not import check)."""
    if more is None:
        return structure
    return lambda case: structure(case) + tuple(more(case))


def spread_structures(candidates: list[AttnCase], budget: int, corpus: list[AttnCase] | tuple[()] = (),
                      key: StructureKey = structure) -> list[tuple[Any, ...]]:
    """Up to ``budget`` structures (``key``) of the candidates, chosen greedily: each adds the most
    values not yet covered of the PRIMARY_AXES (mask kind, causal, GQA), then of every axis (scale,
    sizes of 1, long sequences too: ``_axes``), then the most pairs of values not yet covered
    together, of the primary axes and then of all, then holds the most ``corpus`` cases; ties go to
    candidate order. Deterministic, and the structures chosen under a smaller budget are the first
    of those chosen under a larger one."""
    covers: dict[tuple[Any, ...], frozenset[tuple[str, Any]]] = {}
    for c in candidates:  # a structure covers what its cases do (draws vary the lengths within it)
        covers[key(c)] = covers.get(key(c), frozenset()) | _axes(c)
    keys = list(covers)
    held = Counter(key(c) for c in corpus)
    chosen: list[tuple[Any, ...]] = []
    singles: set[tuple[str, Any]] = set()
    pairs: set[frozenset[tuple[str, Any]]] = set()

    def gain(k: tuple[Any, ...]) -> tuple[int, ...]:
        axes = covers[k]
        new, new_pairs = axes - singles, {frozenset((a, b)) for a in axes for b in axes if a != b} - pairs
        return (sum(a[0] in PRIMARY_AXES for a in new), len(new),
                sum(all(a[0] in PRIMARY_AXES for a in p) for p in new_pairs), len(new_pairs), held[k])

    while keys and len(chosen) < budget:
        best = max(keys, key=gain)  # max keeps the first of equal gains: candidate order
        if not any(gain(best)):
            break
        keys.remove(best)
        chosen.append(best)
        axes = covers[best]
        singles |= axes
        pairs |= {frozenset((a, b)) for a in axes for b in axes if a != b}
    return chosen


def onto(case: AttnCase, template: AttnCase, caps: Capabilities, budget: int = WORK_BUDGET,
         key: StructureKey = structure) -> AttnCase:
    """``case`` moved into ``template``'s structure (``key``): the template's scale, mask kind,
    causal, GQA and sizes of 1 (and head_dim where the scale is 1/sqrt(D)), the drawn case's other
    sizes, mask pattern and layout, values and seed. Where that leaves the structure (a ``key``
    finer than ``structure``), the claims or the work budget: also the template's head counts and
    head_dim (with fewer queries where that outgrows the budget), then its lengths put on the
    template's side of one block (ONE_BLOCK: flex's key), then its sequence lengths too, and at last
    the template itself with the drawn seed."""
    def size(drawn: int, fixed: int) -> int:
        return 1 if fixed == 1 else (drawn if drawn > 1 else fixed)

    same_heads = ((case.heads != case.kv_heads) == (template.heads != template.kv_heads)
                  and (case.heads == 1) == (template.heads == 1) and (case.kv_heads == 1) == (template.kv_heads == 1))
    heads, kv_heads = (case.heads, case.kv_heads) if same_heads else (template.heads, template.kv_heads)
    changes: dict[str, Any] = dict(batch=size(case.batch, template.batch), heads=heads, kv_heads=kv_heads,
                                   sq=size(case.sq, template.sq), skv=size(case.skv, template.skv),
                                   scale=template.scale, causal=template.causal, mask_type=template.mask_type)
    if template.scale is None:
        changes["head_dim"] = template.head_dim
    if template.mask == "none":
        changes.update(mask="none", masked_value="-inf")
    elif case.mask == "none":
        changes.update(mask=template.mask, masked_value=template.masked_value, mask_dims=template.mask_dims,
                       mask_layout=template.mask_layout, pad_side=template.pad_side)
    elif template.mask_type != case.mask_type:
        changes["masked_value"] = template.masked_value
    moved = case.with_(**changes)
    target = key(template)

    def side(drawn: int, fixed: int) -> int:  # a length on the template's side of ONE_BLOCK
        return min(drawn, ONE_BLOCK) if fixed <= ONE_BLOCK else max(drawn, ONE_BLOCK + 1)

    limit = max(budget, case.work)

    def fewer_queries(c: AttnCase) -> AttnCase:  # the template's heads or D can outgrow the budget
        if c.work <= limit or c.sq == 1:
            return c
        return c.with_(sq=max(2, limit // (c.batch * c.heads * c.skv * c.head_dim)))

    fixed = moved.with_(heads=template.heads, kv_heads=template.kv_heads, head_dim=template.head_dim)
    for attempt in (moved, fixed, fewer_queries(fixed),
                    fixed.with_(sq=side(moved.sq, template.sq), skv=side(moved.skv, template.skv)),
                    moved.with_(batch=template.batch, heads=template.heads, kv_heads=template.kv_heads,
                                sq=template.sq, skv=template.skv, head_dim=template.head_dim)):
        if attempt.work <= limit and key(attempt) == target and attempt.outside(caps) is None:
            return attempt
    return template.with_(seed=case.seed)


@st.composite
def structured_cases(draw: Any, caps: Capabilities, dtype: str, templates: list[AttnCase], device: str = "cpu",
                     budget: int = WORK_BUDGET, key: StructureKey = structure) -> AttnCase:
    """A case of ``attn_cases`` moved onto the structure of one of ``templates`` (``onto``)."""
    case = draw(attn_cases(caps, dtype, device, budget))
    return onto(case, draw(st.sampled_from(templates)), caps, budget, key)


def within_structures(corpus: list[AttnCase], count: int, caps: Capabilities, dtype: str, device: str = "cpu",
                      more: StructureKey | None = None) -> tuple[list[AttnCase], Any, int]:
    """For a backend that compiles per structure (Backend.structures; ``more``: its structure_key,
    what its code is specialized on besides ``structure``):
    (the corpus moved into at most ``count`` structures spread over the axes, a strategy drawing
    cases of those structures only, the number of structures).

    The structures are chosen among the corpus's and their neighbours' (one axis changed). Each
    corpus case of another structure is moved ``onto`` the chosen one nearest to it (most axis
    values shared), keeping its sizes, mask pattern and values where it can, so the edges the
    corpus was made for still run; a structure only a neighbour has gets that neighbour as a case.
    Without a corpus case (no edge fits the claims), the structures start from the smallest case
    at the first claimed head_dim, so the bound holds for any claims."""
    key = structure_with(more)
    seeds = list(corpus) or _smallest_case(caps, dtype, device)
    candidates = seeds + [n for c in seeds for n in neighbours(c, caps)]
    chosen = spread_structures(candidates, count, corpus, key)
    if not chosen:
        raise ValueError(f"no case fits these claims ({caps}): nothing to choose structures from")
    # The first case of each structure, in the order chosen (draws shrink toward the first).
    templates = [next(c for c in candidates if key(c) == k) for k in chosen]

    extra = more or (lambda case: ())

    def nearest(case: AttnCase) -> AttnCase:
        # most axis values shared, then most of the fields ``more`` adds (flex's head counts, D,
        # block sides), which decide whether ``onto`` can keep the case's sizes
        axes, own = _axes(case), extra(case)
        return max(templates, key=lambda t: (len(axes & _axes(t)), sum(a == b for a, b in zip(own, extra(t)))))

    moved = [c if key(c) in chosen else onto(c, nearest(c), caps, key=key) for c in corpus]
    kept = list(dict.fromkeys(moved + templates))
    return kept, structured_cases(caps, dtype, templates, device, key=key), len(chosen)


def _smallest_case(caps: Capabilities, dtype: str, device: str) -> list[AttnCase]:
    dims = [d for d in range(1, 1025) if caps.supports_head_dim(d)]
    case = dims and fit(AttnCase(dtype=dtype, device=device, batch=2, heads=2, sq=17, skv=33, head_dim=dims[0], seed=1234), caps)
    return [case] if case else []


def fit(case: AttnCase, caps: Capabilities) -> AttnCase | None:
    """``case`` moved inside ``caps`` where a field can simply be dropped (mask, causal, GQA), or None."""
    if case.kv_heads != case.heads and not caps.gqa:
        case = case.with_(kv_heads=case.heads)
    if case.causal and caps.causal_mode != case.causal:
        case = case.with_(causal=None)
    if case.mask != "none" and case.mask_type not in caps.masks:
        case = case.with_(mask_type=next(iter(sorted(caps.masks)))) if caps.masks else case.with_(mask="none")
    return case if case.outside(caps) is None else None
