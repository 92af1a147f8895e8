//! Coroutine synchronisation: waiting yields the coroutine, it never blocks the thread.
