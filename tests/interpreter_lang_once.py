"""Triton's interpreter, made to skip re-patching ``triton.language`` where it is patched already.

Both interpreters (upstream Triton's and triton-ascend's) run a kernel by swapping
``triton.language``'s builtins for interpreted ones: ``_patch_lang(fn)`` walks the
language modules with ``inspect.getmembers`` and replaces every builtin it finds. They
do it at every launch, and again at every call of a ``@triton.jit`` device function
inside the kernel, once per program. normgen's kernels call such helpers (the casting
steps, the fp8 encoder, the row reductions) in every program, re-finding builtins that an
earlier call had already replaced: cProfile put 8.2 of 54 s there for two cases in upstream's
interpreter and 5.5 of 33 s for one in triton-ascend's (2026-11-28); timed without the
profiler, selections of cases took 12-25% less with this module installed.

Where every builtin that the call would replace is replaced already (read off one member per
module: the replacement that the last patch put in place of its first builtin is still there),
the call changes nothing that matters: upstream's ``_patch_builtin`` replaces only members that still are
builtins, and the rest of ``_patch_lang`` sets attributes to functions equivalent to the
ones already there (the launch that patched them restores the originals when it ends;
triton-ascend never restores). ``install`` wraps ``_patch_lang`` to return at once in
that case, with an empty scope where the interpreter keeps one, and to call the original
otherwise (every launch's first patch in upstream's interpreter, the very first one in
triton-ascend's). A module's first builtin is read once, from the module as the first call
finds it, unpatched. ``tests/test_interpreter_lang_once.py`` checks that kernels with device
functions give the same results, leave the language as they found it, and that the original
runs once per launch. Only the test sessions install this
(``tests/conftest.py``): Triton's internals are not normgen's to patch in users' sessions.
"""

from __future__ import annotations

import inspect

from .interpreter_wrap import wrap

CALLS = {"original": 0, "skipped": 0}  # how often the wrapper called the original, and returned at once
VERIFY = False  # tests: at each skip, look again the way the original does (every member) and raise if it would patch


def _builtin_names(pkg, is_builtin) -> tuple[str, ...]:
    return tuple(name for name, member in inspect.getmembers(pkg) if is_builtin(member))


def install() -> bool:
    """Wrap the interpreter's ``_patch_lang``; False where there is none to wrap or it is wrapped."""
    return wrap("_patch_lang", "normgen_once", _once)


def _once(interpreter, original):
    tl = interpreter.tl
    is_builtin = tl.core.is_builtin
    scope_type = getattr(interpreter, "_LangPatchScope", None)  # upstream's: what the launch restores
    first: dict[int, tuple[object, str | None]] = {}  # id(pkg) -> (pkg, its first builtin's name, read unpatched)
    langs_of: dict[int, tuple[object, tuple]] = {}  # id(fn.__globals__) -> (the dict, its language modules)

    def packages(fn) -> tuple:
        """The modules and classes whose builtins ``_patch_lang(fn)`` replaces, as it picks them."""
        scope = fn.__globals__
        found = langs_of.get(id(scope))
        if found is None or found[0] is not scope:
            langs = [v for v in scope.values() if inspect.ismodule(v) and v in (tl, tl.core)]
            pkgs = [pkg for lang in langs for pkg in (lang, lang.tensor) + ((lang.math,) if lang is tl else ())]
            if scope_type is not None and hasattr(tl.core, "tensor_descriptor_base"):
                pkgs.append(tl.core.tensor_descriptor_base)
            found = langs_of[id(scope)] = (scope, tuple(pkgs))
        return found[1]

    marks: dict[int, tuple[object, str, object]] = {}  # id(pkg) -> (pkg, a builtin's name, what the patch put there)

    def patched(pkg) -> bool:
        """Whether the member that the last patch put in place of pkg's first builtin is still there: a patch
        replaces all of a module's builtins at once, and upstream's restore puts all of them back at once."""
        mark = marks.get(id(pkg))
        return mark is not None and mark[0] is pkg and getattr(pkg, mark[1], None) is mark[2]

    def _patch_lang(fn):
        pkgs = packages(fn)
        if pkgs and all(patched(pkg) for pkg in pkgs):
            CALLS["skipped"] += 1
            if VERIFY:
                unpatched = {pkg.__name__: _builtin_names(pkg, is_builtin) for pkg in pkgs}
                if any(unpatched.values()):
                    raise AssertionError(f"_patch_lang skipped with builtins left unpatched: {unpatched}")
            return scope_type() if scope_type is not None else None
        for pkg in pkgs:  # before the original patches them: which member is the first builtin
            if id(pkg) not in first or first[id(pkg)][0] is not pkg:
                names = _builtin_names(pkg, is_builtin)
                first[id(pkg)] = (pkg, names[0] if names else None)
        CALLS["original"] += 1
        scope = original(fn)
        for pkg in pkgs:
            name = first[id(pkg)][1]
            member = getattr(pkg, name, None) if name else None
            if member is not None and not is_builtin(member):  # replaced by this patch (or an earlier one)
                marks[id(pkg)] = (pkg, name, member)
        return scope

    return _patch_lang
