//! Per-thread words of the core — the running coroutine, the live list, the exit flag, the last
//! id — that must stay readable while a thread's other thread-locals are being destroyed, and
//! must be cheap to read on every switch.
//!
//! Declared with `local!` as a word-sized `Copy` type whose initial value is all zero bits (a
//! null pointer, `false`, `0`), read with `load` and written with `store` ([`LocalWord`]), or
//! found once with `here` for several accesses in a row ([`HereWord`]; on Windows that reads
//! the TLS index once):
//!
//! * On Unix (where std has native thread-locals) a `const` `thread_local!` `Cell` with no
//!   destructor: a plain `fs:`/`tpidr`-relative load, never destroyed while the thread lives.
//! * On Windows with the GNU toolchain, std has no native thread-locals: every `thread_local!`
//!   is a heap box behind a TLS key, *with* a destructor to free the box, and keys' destructors
//!   run in the order the keys were created in the whole process, not in this thread. A
//!   `const` `Cell` there is neither free to read nor immortal (the first Windows test run of the
//!   thread-exit policy read a freed thread-local). So there it is a [`Local`]: one raw TLS slot
//!   (`TlsAlloc`, allocated on first use and never freed) holding the word itself: nothing to
//!   allocate or destroy, and a read of a slot below 64 is one load from the TEB's `TlsSlots`.
//!
//! May import: nothing of the crate.

/// A word-sized value a [`Local`] can hold: converts to and from its bits; zero bits are the
/// initial value.
pub(crate) trait Word: Copy {
    /// The value of zero bits: every `Local`'s initial value.
    #[cfg_attr(windows, allow(dead_code))]
    const ZERO: Self;
    /// The value's bits.
    #[cfg_attr(not(windows), allow(dead_code))]
    fn to_bits(self) -> usize;
    /// The value of these bits (as made by `to_bits`, or zero).
    #[cfg_attr(not(windows), allow(dead_code))]
    fn from_bits(bits: usize) -> Self;
}

impl<T> Word for *const T {
    const ZERO: Self = std::ptr::null();
    #[inline(always)]
    fn to_bits(self) -> usize {
        self as usize
    }
    #[inline(always)]
    fn from_bits(bits: usize) -> Self {
        bits as *const T
    }
}

impl<T> Word for *mut T {
    const ZERO: Self = std::ptr::null_mut();
    #[inline(always)]
    fn to_bits(self) -> usize {
        self as usize
    }
    #[inline(always)]
    fn from_bits(bits: usize) -> Self {
        bits as *mut T
    }
}

impl Word for bool {
    const ZERO: Self = false;
    #[inline(always)]
    fn to_bits(self) -> usize {
        self as usize
    }
    #[inline(always)]
    fn from_bits(bits: usize) -> Self {
        bits != 0
    }
}

#[cfg(target_pointer_width = "64")]
impl Word for u64 {
    const ZERO: Self = 0;
    #[inline(always)]
    fn to_bits(self) -> usize {
        self as usize
    }
    #[inline(always)]
    fn from_bits(bits: usize) -> Self {
        bits as u64
    }
}

/// Declares per-thread words: `local! { /// docs
/// static NAME: Type; }`, each starting at zero bits, read with `NAME.load()` and written with
/// `NAME.store(v)` ([`LocalWord`]).
macro_rules! local {
    ($($(#[$meta:meta])* static $name:ident: $t:ty;)+) => {$(
        #[cfg(not(windows))]
        ::std::thread_local! {
            $(#[$meta])*
            static $name: ::std::cell::Cell<$t> = const {
                ::std::cell::Cell::new(<$t as $crate::local::Word>::ZERO)
            };
        }
        #[cfg(windows)]
        $(#[$meta])*
        static $name: $crate::local::Local<$t> = $crate::local::Local::new();
    )+};
}
pub(crate) use local;

/// Reading and writing a per-thread word declared with `local!`.
pub(crate) trait LocalWord<T> {
    /// What [`LocalWord::here`] finds.
    type Here: HereWord<T>;
    /// This thread's word, for several accesses in a row: on Windows its TLS index is read
    /// once (a load and a check) instead of before every access; on Unix it is the same key.
    fn here(&'static self) -> Self::Here;
    /// This thread's value.
    #[inline(always)]
    fn load(&'static self) -> T {
        self.here().read()
    }
    /// Sets this thread's value.
    #[inline(always)]
    fn store(&'static self, v: T) {
        self.here().write(v)
    }
}

/// A per-thread word found by [`LocalWord::here`]: reads and writes the running thread's value.
pub(crate) trait HereWord<T>: Copy {
    /// The value.
    fn read(self) -> T;
    /// Sets the value.
    fn write(self, v: T);
}

#[cfg(not(windows))]
impl<T: Word> LocalWord<T> for std::thread::LocalKey<std::cell::Cell<T>> {
    type Here = &'static Self;

    #[inline(always)]
    fn here(&'static self) -> &'static Self {
        self
    }
}

#[cfg(not(windows))]
impl<T: Word> HereWord<T> for &'static std::thread::LocalKey<std::cell::Cell<T>> {
    #[inline(always)]
    fn read(self) -> T {
        self.with(|c| c.get())
    }

    #[inline(always)]
    fn write(self, v: T) {
        // `with` and `Cell::set`, not `LocalKey::set`, which goes through the lazy-initialisation
        // path even for a `const` thread-local (3 more instructions per switch here).
        self.with(|c| c.set(v))
    }
}

#[cfg(windows)]
impl<T: Word> LocalWord<T> for Local<T> {
    type Here = Slot<T>;

    #[inline(always)]
    fn here(&'static self) -> Slot<T> {
        Slot {
            index: self.index(),
            _word: std::marker::PhantomData,
        }
    }
}

/// A per-thread word (see the module documentation).
#[cfg(windows)]
pub(crate) struct Local<T: Word + 'static> {
    /// The TLS index plus one (0: not allocated yet).
    slot: std::sync::atomic::AtomicU32,
    _word: std::marker::PhantomData<fn() -> T>,
}

#[cfg(windows)]
impl<T: Word + 'static> Local<T> {
    /// A `Local` whose TLS slot is allocated on first use.
    pub(crate) const fn new() -> Self {
        Local {
            slot: std::sync::atomic::AtomicU32::new(0),
            _word: std::marker::PhantomData,
        }
    }

    /// The TLS index, allocated by the first call in the process.
    #[inline(always)]
    fn index(&self) -> u32 {
        match self.slot.load(std::sync::atomic::Ordering::Acquire) {
            0 => self.allocate(),
            s => s - 1,
        }
    }

    #[cold]
    fn allocate(&self) -> u32 {
        use std::sync::atomic::Ordering;
        use windows_sys::Win32::System::Threading::{TlsAlloc, TlsFree, TLS_OUT_OF_INDEXES};
        // SAFETY: TlsAlloc has no preconditions; a new index reads as null in every thread.
        let index = unsafe { TlsAlloc() };
        if index == TLS_OUT_OF_INDEXES {
            panic!(
                "costack: no thread-local storage index left: {}",
                std::io::Error::last_os_error()
            );
        }
        match self
            .slot
            .compare_exchange(0, index + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => index,
            Err(won) => {
                // Another thread allocated first: use its index and give ours back.
                // SAFETY: `index` is ours and unused.
                unsafe { TlsFree(index) };
                won - 1
            }
        }
    }
}

/// A [`Local`]'s TLS index, read once (see [`LocalWord::here`]).
#[cfg(windows)]
#[derive(Clone, Copy)]
pub(crate) struct Slot<T> {
    index: u32,
    _word: std::marker::PhantomData<fn() -> T>,
}

#[cfg(windows)]
impl<T: Word> HereWord<T> for Slot<T> {
    /// This thread's value.
    #[inline(always)]
    fn read(self) -> T {
        let index = self.index;
        let bits = if index < 64 {
            let bits: usize;
            // SAFETY: the TEB's 64 TlsSlots are at gs:[0x1480] on x64; reading this thread's
            // slot of an allocated index is what TlsGetValue does for it.
            unsafe {
                core::arch::asm!(
                    "mov {bits}, gs:[0x1480 + {i} * 8]",
                    i = in(reg) index as usize,
                    bits = lateout(reg) bits,
                    options(nostack, readonly, preserves_flags)
                );
            }
            bits
        } else {
            // SAFETY: an index from TlsAlloc.
            unsafe { windows_sys::Win32::System::Threading::TlsGetValue(index) as usize }
        };
        T::from_bits(bits)
    }

    /// Sets this thread's value.
    #[inline(always)]
    fn write(self, v: T) {
        let index = self.index;
        let bits = v.to_bits();
        if index < 64 {
            // SAFETY: as in `read`: writing this thread's slot of an allocated index, which is
            // what TlsSetValue does for it.
            unsafe {
                core::arch::asm!(
                    "mov gs:[0x1480 + {i} * 8], {bits}",
                    i = in(reg) index as usize,
                    bits = in(reg) bits,
                    options(nostack, preserves_flags)
                );
            }
        } else {
            // SAFETY: an index from TlsAlloc; the value is a plain word.
            let ok = unsafe {
                windows_sys::Win32::System::Threading::TlsSetValue(index, bits as *const _)
            };
            assert!(ok != 0, "costack: TlsSetValue failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LocalWord;

    local! {
        /// A word for the test.
        static WORD: u64;
        /// A flag for the test.
        static FLAG: bool;
    }

    #[test]
    fn words_start_at_zero_and_are_per_thread() {
        assert_eq!(WORD.load(), 0);
        assert!(!FLAG.load());
        WORD.store(u64::MAX - 7);
        FLAG.store(true);
        std::thread::spawn(|| {
            assert_eq!(WORD.load(), 0, "a new thread starts at zero");
            assert!(!FLAG.load());
            WORD.store(42);
            assert_eq!(WORD.load(), 42);
        })
        .join()
        .unwrap();
        assert_eq!(
            WORD.load(),
            u64::MAX - 7,
            "the other thread's store stays there"
        );
        assert!(FLAG.load());
    }
}
