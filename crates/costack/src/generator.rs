//! Generators: a typed layer over coroutines that passes values out on yield and in on resume.
//!
//! A [`Generator<I, Y, R>`] runs a closure that receives a [`Yielder`] and the first input. Each
//! [`Yielder::suspend`]`(y)` hands `y` to the caller of [`Generator::resume`] and returns the
//! input of the next `resume`. When the closure returns `r`, `resume` says
//! [`GeneratorState::Complete`]`(r)`. A generator that takes `()` and returns `()` is an
//! [`Iterator`] over what it yields.
//!
//! The values never touch the heap: `resume` keeps the exchange slot on its own stack and lends
//! its address to the coroutine for the duration of the call, however the call ends.
//!
//! A generator's body may wait — lock a [`CoMutex`](crate::sync::CoMutex), read a socket of an
//! event loop, await a future — when `resume` is called in a coroutine (an event loop's task,
//! say): the caller then waits with it (see [`park`](crate::park)). A lexer can pull its input
//! from a socket.
//!
//! ```
//! use costack::Generator;
//!
//! let fib = Generator::new(|y, ()| {
//!     let (mut a, mut b) = (0u64, 1u64);
//!     loop {
//!         y.suspend(a);
//!         (a, b) = (b, a + b);
//!     }
//! });
//! let first: Vec<u64> = fib.take(10).collect();
//! assert_eq!(first, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
//! ```
//!
//! Values in both directions:
//!
//! ```
//! use costack::{Generator, GeneratorState};
//!
//! // A running sum: each resume sends a number in, each suspend sends the sum out.
//! let mut sum = Generator::new(|y, mut x: i32| {
//!     let mut total = 0;
//!     while x != 0 {
//!         total += x;
//!         x = y.suspend(total);
//!     }
//!     total
//! });
//! assert_eq!(sum.resume(3), GeneratorState::Yielded(3));
//! assert_eq!(sum.resume(4), GeneratorState::Yielded(7));
//! assert_eq!(sum.resume(0), GeneratorState::Complete(7));
//! ```
//!
//! May import: `coroutine::{create, handle, header, switch}` and `park`.

use crate::coroutine::create::{Builder, Coroutine};
use crate::coroutine::handle::Status;
use crate::coroutine::header::Header;
use crate::coroutine::switch::current_header;
use crate::park::Park;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

/// What a generator did when resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratorState<Y, R> {
    /// It suspended with this value.
    Yielded(Y),
    /// Its closure returned this value.
    Complete(R),
}

/// The exchange slot between `resume` and the generator's body, on the resumer's stack.
enum Transfer<I, Y> {
    Empty,
    Input(I),
    Output(Y),
}

/// Marks a generator's value types: `I` goes in, `Y` comes out.
type Types<I, Y> = PhantomData<(fn(I), fn() -> Y)>;
/// Marks a yielder's value types, and makes it `!Send` (it belongs to its coroutine's thread).
type YielderTypes<I, Y> = PhantomData<(fn(Y) -> I, *const ())>;

/// A coroutine that yields values of type `Y`, takes values of type `I` on resume, and returns
/// `R`. See the [module documentation](self).
pub struct Generator<I, Y, R> {
    co: Coroutine<R>,
    _types: Types<I, Y>,
}

/// The body's side of a [`Generator`]: suspends it with a value.
pub struct Yielder<I, Y> {
    /// The generator's coroutine; `suspend` checks it is the running one.
    co: *const Header,
    _types: YielderTypes<I, Y>,
}

impl<I: 'static, Y: 'static, R: 'static> Generator<I, Y, R> {
    /// Creates a generator with a default coroutine stack; the body does not run until the
    /// first [`resume`](Generator::resume), whose input it receives as its second argument.
    pub fn new<F>(body: F) -> Generator<I, Y, R>
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        Self::with_builder(Builder::new(), body)
    }

    /// Creates a generator on a coroutine configured by `builder` (stack size, name).
    pub fn with_builder<F>(builder: Builder, body: F) -> Generator<I, Y, R>
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        let co = builder.create(move || {
            let yielder = Yielder {
                co: current_header(),
                _types: PhantomData,
            };
            let input = yielder.exchange(None);
            body(&yielder, input)
        });
        Generator {
            co,
            _types: PhantomData,
        }
    }

    /// Runs the body until it suspends with a value or returns.
    ///
    /// Called in a coroutine, a body that waits — for a lock, a socket, a future — makes the
    /// caller wait with it (see [`park`](crate::park)): `resume` returns once the body suspends
    /// with a value or returns.
    ///
    /// # Panics
    /// If the generator has completed, is running, or its body panics (with its payload); if
    /// the body yields with [`yield_now`](crate::yield_now) instead of [`Yielder::suspend`];
    /// and if the body waits while `resume` was called outside any coroutine (nothing can wait
    /// for it there).
    #[inline]
    pub fn resume(&mut self, input: I) -> GeneratorState<Y, R> {
        let mut transfer = Transfer::<I, Y>::Input(input);
        let h = self.co.header();
        /// Lends the slot to the body for the duration of this call only, however it ends: an
        /// entry that panics (a coroutine woken by the body panicked, or the generator could
        /// not be entered) must not leave the body a pointer into this dead frame.
        struct Lend<'a>(&'a Header, *mut ());
        impl Drop for Lend<'_> {
            #[inline]
            fn drop(&mut self) {
                self.0.set_transfer(self.1);
            }
        }
        let lend = Lend(h, h.replace_transfer(ptr::addr_of_mut!(transfer).cast()));
        let status = self.co.enter();
        drop(lend);
        match status {
            Status::Finished(r) => GeneratorState::Complete(r),
            Status::Yielded => match transfer {
                Transfer::Output(y) => GeneratorState::Yielded(y),
                _ => no_value(self.co.is_parked()),
            },
        }
    }

    /// Whether the body has returned (or panicked).
    pub fn is_complete(&self) -> bool {
        self.co.is_finished()
    }
}

#[cold]
#[inline(never)]
fn no_value(parked: bool) -> ! {
    if parked {
        panic!(
            "costack: a generator's body is waiting (for a lock, I/O or a future) and \
             Generator::resume was called outside of any coroutine, where nothing can wait for \
             it; resume it from a coroutine or an event loop's task"
        )
    }
    panic!(
        "costack: a generator's body yielded with yield_now() instead of Yielder::suspend(value)"
    )
}

impl<I, Y> Yielder<I, Y> {
    /// The exchange with `resume`, through the slot it lends (see [`Generator::resume`]): hands
    /// `value` (if any) to the `resume` in progress and waits for the input of the next one.
    ///
    /// The wait is the contract's yield-until ([`Park::yield_until`]): the body yields to its
    /// enterer until an entry brings an input, so an entry other than `resume`'s (a handle
    /// taken with `current()`, a deferred wake-up) finds no slot and just yields again. An input
    /// that arrives while the body is not at a suspend point (an earlier `resume` was abandoned
    /// by a panic while the body waited for I/O, and this one continued it) is dropped, and the
    /// value of the next suspend point goes to this `resume`.
    #[cold]
    #[inline(never)]
    fn exchange(&self, value: Option<Y>) -> I {
        if current_header() != self.co {
            foreign_yielder();
        }
        let mut value = value;
        let mut input = None;
        let ready = || {
            // SAFETY: we are the running coroutine `co` (checked above; a coroutine only
            // resumes into itself).
            let t = unsafe { (*self.co).transfer() }.cast::<Transfer<I, Y>>();
            if t.is_null() {
                return false; // not entered by `resume`: wait on
            }
            // A non-null slot was lent by the `resume` that is entering us now (the only code
            // that sets it), for this generator's `I` and `Y`; it is live and unaliased until
            // we switch back, as that `resume` waits on its stack meanwhile.
            if let Some(v) = value.take() {
                // SAFETY: see above. Replaces (and drops) an input we were not waiting for.
                unsafe { *t = Transfer::Output(v) };
                return false; // yield, so that `resume` returns the value
            }
            // SAFETY: see above.
            input = unsafe { take_input(t) };
            input.is_some()
        };
        // SAFETY: `co` is the running coroutine (checked above), so non-null.
        unsafe { Park::yield_until_running(NonNull::new_unchecked(self.co as *mut Header), ready) };
        match input {
            Some(i) => i,
            None => unreachable!("costack: generator resumed without an input"),
        }
    }

    /// Hands `value` to the caller of [`Generator::resume`], suspends, and returns the input of
    /// the next `resume`.
    ///
    /// # Panics
    /// If called outside the generator's own coroutine.
    #[inline(always)]
    pub fn suspend(&self, value: Y) -> I {
        if current_header() != self.co {
            foreign_yielder();
        }
        // SAFETY: we are the running coroutine `co` (checked above).
        let t = unsafe { (*self.co).transfer() }.cast::<Transfer<I, Y>>();
        if t.is_null() {
            return self.exchange(Some(value)); // no `resume` in progress: keep the value
        }
        // The common case, straight through: hand the value to the `resume` in progress (its
        // slot, lent for this call, is live and unaliased until we switch back; an input we
        // were not waiting for is dropped), yield, and take the next input.
        // SAFETY: see above.
        unsafe { *t = Transfer::Output(value) };
        crate::yield_now();
        // SAFETY: we are `co` again (a coroutine only resumes into itself).
        let t = unsafe { (*self.co).transfer() }.cast::<Transfer<I, Y>>();
        if !t.is_null() {
            // SAFETY: lent by the `resume` entering us now (see above).
            if let Some(i) = unsafe { take_input(t) } {
                return i;
            }
        }
        self.exchange(None) // entered other than by `resume`: wait for it
    }
}

/// Takes the input out of the slot `t`, if that is what it holds, and leaves it empty; leaves
/// anything else where it is.
///
/// # Safety
/// `t` is the slot lent by the `resume` that is entering the generator now: live, and not
/// accessed by anything else until the generator switches back.
#[inline(always)]
unsafe fn take_input<I, Y>(t: *mut Transfer<I, Y>) -> Option<I> {
    // SAFETY: per the contract.
    match unsafe { ptr::replace(t, Transfer::Empty) } {
        Transfer::Input(i) => Some(i),
        other => {
            // SAFETY: per the contract; puts back what was there.
            unsafe { ptr::write(t, other) };
            None
        }
    }
}

#[cold]
#[inline(never)]
fn foreign_yielder() -> ! {
    panic!("costack: Yielder used outside its own generator's coroutine")
}

impl<Y: 'static> Iterator for Generator<(), Y, ()> {
    type Item = Y;

    #[inline]
    fn next(&mut self) -> Option<Y> {
        if self.is_complete() {
            return None;
        }
        match self.resume(()) {
            GeneratorState::Yielded(y) => Some(y),
            GeneratorState::Complete(()) => None,
        }
    }
}

impl<I, Y, R> std::fmt::Debug for Generator<I, Y, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").field("co", &self.co).finish()
    }
}
