//! Generators: a typed layer over coroutines that passes values out on yield and in on resume.
//!
//! A [`Generator<I, Y, R>`] runs a closure that receives a [`Yielder`] and the first input. Each
//! [`Yielder::suspend`]`(y)` hands `y` to the caller of [`Generator::resume`] and returns the
//! input of the next `resume`. When the closure returns `r`, `resume` says
//! [`GeneratorState::Complete`]`(r)`. A generator that takes `()` and returns `()` is an
//! [`Iterator`] over what it yields.
//!
//! The values never touch the heap: `resume` keeps the exchange slot on its own stack and lends
//! its address to the coroutine for the duration of the switch.
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

use crate::coroutine::{current_header, Builder, Coroutine, Header, Status};
use std::marker::PhantomData;
use std::ptr;

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
            let input = yielder.take_input();
            body(&yielder, input)
        });
        Generator {
            co,
            _types: PhantomData,
        }
    }

    /// Runs the body until it suspends with a value or returns.
    ///
    /// # Panics
    /// If the generator has completed, is running, or its body panics (with its payload).
    #[inline]
    pub fn resume(&mut self, input: I) -> GeneratorState<Y, R> {
        let mut transfer = Transfer::<I, Y>::Input(input);
        let h = self.co.header();
        h.transfer.set(ptr::addr_of_mut!(transfer).cast());
        let status = self.co.enter();
        h.transfer.set(ptr::null_mut());
        match status {
            Status::Finished(r) => GeneratorState::Complete(r),
            Status::Yielded => match transfer {
                Transfer::Output(y) => GeneratorState::Yielded(y),
                _ => panic!(
                    "costack: a generator's body yielded with yield_now() instead of \
                     Yielder::suspend(value)"
                ),
            },
        }
    }

    /// Whether the body has returned (or panicked).
    pub fn is_complete(&self) -> bool {
        self.co.is_finished()
    }
}

impl<I, Y> Yielder<I, Y> {
    /// The exchange slot lent by the `resume` that entered the generator. It is live and
    /// unaliased until this coroutine switches back: `resume` waits on its stack meanwhile.
    #[inline(always)]
    fn transfer(&self) -> *mut Transfer<I, Y> {
        assert!(
            current_header() == self.co,
            "costack: Yielder used outside its own generator's coroutine"
        );
        // SAFETY: we are the running coroutine `co` (checked above).
        let t = unsafe { (*self.co).transfer.get() };
        assert!(
            !t.is_null(),
            "costack: a generator was entered other than through Generator::resume"
        );
        // Non-null `transfer` was set by `Generator::resume` of this generator, so it points to
        // a `Transfer<I, Y>` with our `I` and `Y`.
        t.cast::<Transfer<I, Y>>()
    }

    #[inline(always)]
    fn take_input(&self) -> I {
        // SAFETY: `transfer()` is live and unaliased until we switch back (see its docs).
        match unsafe { ptr::replace(self.transfer(), Transfer::Empty) } {
            Transfer::Input(i) => i,
            _ => unreachable!("costack: generator resumed without an input"),
        }
    }

    /// Hands `value` to the caller of [`Generator::resume`], suspends, and returns the input of
    /// the next `resume`.
    #[inline(always)]
    pub fn suspend(&self, value: Y) -> I {
        // SAFETY: `transfer()` is live and unaliased until we switch back (see its docs).
        unsafe { *self.transfer() = Transfer::Output(value) };
        crate::yield_now();
        self.take_input()
    }
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
