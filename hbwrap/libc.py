"""The few libc calls hbwrap needs that `os` lacks (prctl, inotify_init1, inotify_add_watch), without the
ctypes package: `import ctypes` builds its type classes at import, about 0.5 MB of a keeper's 3.6 MB
(measured with `python -I -S`), while `_ctypes`, the C module under it, calls a symbol for about 0.1 MB."""
from __future__ import annotations

_symbols: dict[str, object] = {}
_handle = None


def call(name: str, *args: int | bytes) -> int:
    """Call libc's `name` with C int or char* arguments and return its int result. errno is not kept: a
    failing call raises OSError naming the call (hbwrap only reports such failures, it does not branch on
    them)."""
    result = _function(name)(*args)
    if result < 0:
        raise OSError(f"{name} failed")
    return result


def _function(name: str):
    """libc's `name` as a callable; OSError when libc has no such symbol."""
    fn = _symbols.get(name)
    if fn is None:
        global _handle
        try:
            from _ctypes import call_function, dlopen, dlsym
        except ImportError:  # an interpreter without these private helpers: the ctypes package does it
            import ctypes

            try:
                fn = getattr(ctypes.CDLL(None, use_errno=True), name)
            except AttributeError:
                raise OSError(f"libc has no {name}") from None
        else:
            if _handle is None:
                _handle = dlopen(None)
            address = dlsym(_handle, name)

            def fn(*args, _address=address, _call=call_function):
                return _call(_address, args)
        _symbols[name] = fn
    return fn
