//! A minimal coroutine on glibc's `makecontext`/`swapcontext`, the libc
//! baseline of the `roundtrip` benchmark.
//!
//! It is written for the benchmark only: one coroutine that yields back to
//! its creator each time it is resumed, until it is dropped. Each round trip
//! costs two `swapcontext` calls, and each of those saves and restores the
//! signal mask with a system call, which is what costack's assembly backend
//! avoids.

use std::cell::Cell;
use std::io;
use std::mem::MaybeUninit;
use std::ptr;

/// An anonymous private mapping used as a coroutine stack, with one
/// inaccessible guard page below the usable part.
#[derive(Debug)]
pub struct MmapStack {
    base: *mut u8,
    len: usize,
    page: usize,
}

impl MmapStack {
    /// Maps a stack with at least `usable` bytes of usable space (rounded up
    /// to whole pages) plus a guard page.
    pub fn new(usable: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).map_err(|_| io::Error::last_os_error())?;
        let usable = usable.max(page).div_ceil(page) * page;
        let len = usable + page;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choosing touches no existing memory; the result is checked below.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = MmapStack {
            base: base.cast(),
            len,
            page,
        };
        // SAFETY: the first page lies inside the mapping made above, which
        // nothing else refers to yet.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            // `stack` unmaps on drop.
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// Lowest usable address (just above the guard page).
    pub fn bottom(&self) -> *mut u8 {
        // SAFETY: `page < len`, so the result stays inside the mapping.
        unsafe { self.base.add(self.page) }
    }

    /// Number of usable bytes above [`bottom`](Self::bottom).
    pub fn usable_len(&self) -> usize {
        self.len - self.page
    }
}

impl Drop for MmapStack {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping made in `new`,
        // which is unmapped only here; whoever ran on the stack has finished
        // with it (see `PingPong::drop`).
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// The two contexts and the stop flag, shared by the creator and the
/// coroutine through a raw pointer. It lives at one heap address from
/// creation to drop: glibc's x86-64 `ucontext_t` points into itself (its
/// floating-point save area), so a context must never move once initialised.
struct Shared {
    caller: libc::ucontext_t,
    coroutine: libc::ucontext_t,
    stop: bool,
}

thread_local! {
    /// Hands the `Shared` pointer to `entry`, which takes no arguments
    /// (makecontext passes only `int`s, which cannot hold a pointer portably).
    static STARTING: Cell<*mut Shared> = const { Cell::new(ptr::null_mut()) };
}

extern "C" fn entry() {
    let shared = STARTING.with(|s| s.replace(ptr::null_mut()));
    // SAFETY: `PingPong::new` stored a pointer to a live, pinned `Shared`
    // just before switching here, and keeps it alive until this function has
    // returned (`PingPong::drop` waits for that). The creator is suspended
    // inside `swapcontext` whenever this code runs, so no two parties touch
    // `Shared` at once; all accesses go through the raw pointer.
    unsafe {
        while !(*shared).stop {
            libc::swapcontext(&mut (*shared).coroutine, &(*shared).caller);
        }
    }
    // Returning resumes `uc_link`, the creator's context.
}

/// A started `swapcontext` coroutine that yields straight back every time it
/// is resumed.
#[derive(Debug)]
pub struct PingPong {
    shared: *mut Shared,
    // Kept only for its lifetime: the coroutine runs on it.
    _stack: MmapStack,
}

impl PingPong {
    /// Creates the coroutine on a fresh stack of `stack_size` bytes and runs
    /// it up to its first yield.
    pub fn new(stack_size: usize) -> io::Result<Self> {
        let stack = MmapStack::new(stack_size)?;
        // SAFETY: `ucontext_t` is a plain C struct for which all-zero bytes
        // are a valid (if meaningless) value; getcontext fills it in below.
        let zeroed = unsafe { MaybeUninit::<libc::ucontext_t>::zeroed().assume_init() };
        let shared = Box::into_raw(Box::new(Shared {
            caller: zeroed,
            coroutine: zeroed,
            stop: false,
        }));
        let this = PingPong {
            shared,
            _stack: stack,
        };
        // SAFETY: `shared` is a valid, uniquely owned heap allocation that
        // does not move until `drop`. getcontext initialises the coroutine's
        // context; makecontext then points it at `entry` on our own mapped
        // stack, with `uc_link` naming the caller context so that returning
        // from `entry` resumes whoever switched in last. The first
        // swapcontext runs `entry` up to its first yield; `STARTING` carries
        // the pointer to it on this thread.
        unsafe {
            let co = &raw mut (*shared).coroutine;
            if libc::getcontext(co) != 0 {
                let err = io::Error::last_os_error();
                (*shared).stop = true; // never started: nothing to finish
                return Err(err);
            }
            (*co).uc_stack.ss_sp = this._stack.bottom().cast();
            (*co).uc_stack.ss_size = this._stack.usable_len();
            (*co).uc_stack.ss_flags = 0;
            (*co).uc_link = &raw mut (*shared).caller;
            libc::makecontext(co, entry, 0);
            STARTING.with(|s| s.set(shared));
            if libc::swapcontext(&raw mut (*shared).caller, co) != 0 {
                let err = io::Error::last_os_error();
                STARTING.with(|s| s.set(ptr::null_mut()));
                (*shared).stop = true; // never started: nothing to finish
                return Err(err);
            }
        }
        Ok(this)
    }

    /// Resumes the coroutine, which yields straight back: two `swapcontext`.
    #[inline]
    pub fn round_trip(&mut self) {
        // SAFETY: the coroutine is suspended in its loop (it was started by
        // `new` and yields after every resume), `Shared` is alive and pinned,
        // and the coroutine touches it only while we are suspended here.
        unsafe {
            libc::swapcontext(
                &raw mut (*self.shared).caller,
                &raw const (*self.shared).coroutine,
            );
        }
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        // SAFETY: if the coroutine was started (stop still false) it is
        // suspended in its loop; setting `stop` and resuming lets `entry`
        // return, which switches back here through `uc_link`, so nothing
        // runs on the stack any more when it is unmapped after this. Then
        // `shared`, allocated by `Box::into_raw` in `new`, is freed exactly
        // once.
        unsafe {
            if !(*self.shared).stop {
                (*self.shared).stop = true;
                libc::swapcontext(
                    &raw mut (*self.shared).caller,
                    &raw const (*self.shared).coroutine,
                );
            }
            drop(Box::from_raw(self.shared));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong_runs_and_finishes() {
        let mut p = PingPong::new(64 * 1024).unwrap();
        for _ in 0..1000 {
            p.round_trip();
        }
        drop(p);
        // A second one on the same thread: STARTING was consumed cleanly.
        let mut q = PingPong::new(16 * 1024).unwrap();
        q.round_trip();
    }

    #[test]
    fn stack_is_page_rounded() {
        let s = MmapStack::new(1).unwrap();
        assert!(s.usable_len() >= 4096);
        assert_eq!(s.bottom() as usize % 4096, 0);
    }
}
