"""The few libc calls hbwrap needs that `os` lacks (prctl, inotify_init1, inotify_add_watch, mallopt), without the
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


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_heap_for(chunk_bytes: int) -> bool:
    """Tune glibc's malloc so that a loop allocating and freeing a few buffers of `chunk_bytes` each turn
    reuses heap memory instead of asking the kernel for fresh pages every time.

    By default glibc serves an allocation above 128 KiB with mmap, then (after the first free) raises that
    limit to the buffer's size but trims the heap whenever more than twice that lies free at its top: a
    supervisor reading 256 KiB of output at a time, with the two or three buffers of that size each chunk
    makes (the read, its masked copy for --repeat-timeout, slices of it), gave the heap back and faulted it
    in again on every chunk. Measured on 256 MiB of text lines: system time of the run nearly doubled and
    throughput with --repeat-timeout fell to about half of without. Here buffers up to 4 chunks come from
    the heap and up to 8 chunks may stay free at its top (2 MiB with 256 KiB reads) before it is trimmed;
    larger allocations (a 300 MB line) still get their own mapping and go back to the kernel when freed.

    Returns False where there is no glibc mallopt (musl's returns 0 and does nothing; nothing else changes).
    """
    try:
        return bool(call("mallopt", M_MMAP_THRESHOLD, 4 * chunk_bytes)
                    and call("mallopt", M_TRIM_THRESHOLD, 8 * chunk_bytes))
    except OSError:
        return False
