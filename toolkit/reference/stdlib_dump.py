"""Dump the standard library's docstrings as JSON lines. Run as a script in an isolated interpreter.

``corpus.py`` runs this file with ``python -I -S`` (no site-packages, no user paths, fixed hash seed), so
only the standard library is importable and whatever a module does at import time (signal handlers,
threads, printing, warnings) stays in that throw-away process. The script uses the standard library only.

Protocol, on stdout, one JSON object per line:
  ``{"total": N}`` first, then for each candidate module ``{"module": name, "objects": [...]}`` where every
  object is ``{"title", "kind", "signature", "doc"}``, or ``{"module": name, "skipped": reason}``.
Arguments: a JSON object ``{"modules": [...] | null, "exclude": [...]}`` as ``argv[1]``.
"""

import contextlib
import importlib
import inspect
import io
import json
import pkgutil
import re
import sys
import warnings

# Modules that do something visible on import (open a browser or a window, print), need a display, or are
# the test suite / IDE rather than documented API.
DEFAULT_EXCLUDE = {
    "antigravity", "this", "tkinter", "turtle", "turtledemo", "idlelib", "test", "lib2to3", "ensurepip",
    "pydoc_data", "encodings", "__main__", "__hello__", "__phello__", "xxsubtype", "xxlimited",
    "xxlimited_35", "msilib", "msvcrt", "winreg", "winsound", "nturl2path", "venv",
}
SKIP_PARTS = {"test", "tests", "idle_test", "__main__"}
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def candidate_modules(only, exclude):
    tops = sorted(only) if only else sorted(n for n in sys.stdlib_module_names if not n.startswith("_"))
    return [n for n in tops if n not in exclude]


def submodules(pkg):
    """Public submodules of an imported package, recursively, sorted (tests and private ones skipped)."""
    path = getattr(pkg, "__path__", None)
    if not path:
        return []
    found = []
    for info in pkgutil.walk_packages(path, pkg.__name__ + ".", onerror=lambda name: None):
        parts = info.name.split(".")
        if any(p.startswith("_") or p in SKIP_PARTS for p in parts):
            continue
        found.append(info.name)
    return sorted(found)


def own_doc(obj):
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    return inspect.cleandoc(doc) if doc else None


def signature(obj):
    try:
        return ADDRESS.sub("", str(inspect.signature(obj)))
    except (TypeError, ValueError, RuntimeError):
        return ""


def member_kind(value):
    if isinstance(value, (classmethod, staticmethod)):
        return "method", value.__func__
    if isinstance(value, property) or inspect.isdatadescriptor(value) and not inspect.isroutine(value):
        return "attribute", value
    if inspect.isroutine(value):
        return "method", value
    return None, None


def describe(modname, mod, claimed):
    objects = []
    doc = own_doc(mod)
    if doc:
        objects.append({"title": modname, "kind": "module", "signature": "", "doc": doc})
    names = getattr(mod, "__all__", None)
    if not isinstance(names, (list, tuple)):
        names = [n for n in dir(mod) if not n.startswith("_")]
    for name in sorted(set(n for n in names if isinstance(n, str))):
        obj = getattr(mod, name, None)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        origin = getattr(obj, "__module__", None) or ""
        # Defined here, or re-exported from a private implementation module (io.StringIO lives in _io).
        if origin != modname and not any(p.startswith("_") for p in origin.split(".")):
            continue
        if id(obj) in claimed:
            continue
        claimed.add(id(obj))
        title = f"{modname}.{name}"
        kind = "class" if inspect.isclass(obj) else "function"
        doc = own_doc(obj)
        if doc:
            objects.append({"title": title, "kind": kind, "signature": signature(obj), "doc": doc})
        if kind != "class":
            continue
        for attr, value in sorted(vars(obj).items()):
            if attr.startswith("_"):
                continue
            mkind, target = member_kind(value)
            mdoc = own_doc(target) if mkind else None
            if mdoc:
                sig = signature(target) if mkind == "method" else ""
                objects.append({"title": f"{title}.{attr}", "kind": mkind, "signature": sig, "doc": mdoc})
    return objects


def main():
    args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    exclude = DEFAULT_EXCLUDE | set(args.get("exclude") or ())
    tops = candidate_modules(args.get("modules"), exclude)
    out = sys.stdout
    out.write(json.dumps({"total": len(tops)}) + "\n")
    out.flush()
    claimed = set()
    warnings.simplefilter("ignore")
    for top in tops:
        records = []
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                mod = importlib.import_module(top)
                names = [top] + submodules(mod)
                for name in names:
                    try:
                        sub = importlib.import_module(name)
                    except BaseException as exc:  # noqa: BLE001 - any import failure means "skip it"
                        records.append({"module": name, "skipped": type(exc).__name__})
                        continue
                    records.append({"module": name, "objects": describe(name, sub, claimed)})
        except BaseException as exc:  # noqa: BLE001
            records = [{"module": top, "skipped": type(exc).__name__}]
        out.write(json.dumps({"top": top, "records": records}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
