import sys
from pathlib import Path

# tests/mutants.py and the stand-ins are imported by name from the tests.
sys.path.insert(0, str(Path(__file__).parent))


def _load_what_flex_loads() -> None:
    """flex_attention's first calls import and register more of torch (cache artifacts, prims ops),
    which a second in-process run cannot import again: the second seed of the slow false-alarm test
    failed every flex-eager cell ("Artifact of type=autotune already registered", then "Tried to
    register an operator ... multiple times"). Naming the modules is whack-a-mole across torch
    releases, so make the calls the backend makes, once, before any snapshot."""
    from attnparity.backends.registry import get_backend
    from attnparity.check.cases import AttnCase

    flex = get_backend("flex-eager")
    if flex.unavailable_reason():
        return
    for case in (AttnCase(), AttnCase(mask="random", mask_type="bool"), AttnCase(mask="random", mask_type="float"),
                 AttnCase(causal="top-left", sq=4, skv=4), AttnCase(heads=2, kv_heads=1)):
        q, k, v, mask = case.tensors()
        flex.fn(q, k, v, attn_mask=mask, is_causal=case.causal is not None)


_load_what_flex_loads()
