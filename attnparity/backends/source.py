"""Source code of attnparity's own functions, for the standalone repro files (check/standalone.py):
the code a repro file runs is the code attnparity ran, copied, not rewritten by hand.

``source_of`` copies a function or class and drops its imports of attnparity (the repro file
defines those names itself, or they are not needed there); ``StandaloneCall`` is what a built-in
adapter module's private ``_standalone(name)`` hook returns: how a repro calls that backend with
only torch and the library at fault. The hooks are private; the public contract (base.py) does not
know them, and a backend without one gets no standalone repro.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StandaloneCall:
    """``call``: one expression of ``q, k, v, attn_mask, is_causal, scale`` giving the backend's
    (B, H, Sq, D) output; ``sources``: the definitions it needs (attnparity's adapter code, copied);
    ``libraries``: the distributions whose versions the repro prints and whose bug it is."""

    call: str
    sources: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ("torch",)


class _DropOwnImports(ast.NodeTransformer):
    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        own = node.level > 0 or (node.module or "").split(".")[0] == "attnparity"
        return None if own else node

    def visit_Import(self, node: ast.Import) -> Any:
        node.names = [a for a in node.names if a.name.split(".")[0] != "attnparity"]
        return node if node.names else None

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        body = getattr(node, "body", None)
        if isinstance(body, list) and not body and not isinstance(node, ast.Module):
            node.body = [ast.Pass()]  # type: ignore[attr-defined]
        return node


def source_of(obj: Any, *, drop: tuple[str, ...] = ()) -> str:
    """The source of function or class ``obj`` without its imports of attnparity; ``drop``: methods
    of a class to leave out (those that need what a repro file does not have). Comments are lost
    (the text is regenerated from the syntax tree), docstrings kept."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    node = tree.body[0]
    if isinstance(node, ast.ClassDef) and drop:
        node.body = [n for n in node.body if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                                  and n.name in drop)]
    return ast.unparse(_DropOwnImports().visit(node))


def constant_source(name: str, value: Any) -> str:
    """``name = <value>`` for a constant made of Python literals."""
    return f"{name} = {value!r}"
