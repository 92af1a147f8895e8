//! Creating a coroutine: [`Builder`] (stack size, name), and the typed handle it gives,
//! [`Coroutine<R>`], whose `enter` hands back the closure's result.
//!
//! A new coroutine takes a stack from the thread's pool (or maps one), lays out its control
//! block and closure at the top of it, and gets the next id of its thread; the thread's first
//! coroutine also sets up the overflow handler and the thread-exit policy.
//!
//! May import: everything else in `coroutine` (`header`, `id`, `switch`, `handle`), the `pool`,
//! the `overflow` handler, `stack` and the backend's `INIT_STACK`. Nothing in `coroutine`
//! imports this file.

use super::handle::{arm_exit_guard, Status};
use super::header::{CoHandle, Header};
use super::id::CoId;
use super::state::FINISHED;
use super::switch::{coroutine_main, enter_header};
use crate::backend::INIT_STACK;
use crate::pool;
use crate::stack::{page_size, Stack, StackError, DEFAULT_STACK_SIZE, MIN_STACK_SIZE};
use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};

/// Rounds a requested stack size the way [`Stack::new`] does, so pooled stacks match.
#[inline]
fn round_stack_size(size: usize) -> usize {
    if size == DEFAULT_STACK_SIZE {
        return size; // a multiple of every page size Linux uses, up to 1 MiB
    }
    let page = page_size();
    size.max(MIN_STACK_SIZE).saturating_add(page - 1) & !(page - 1)
}

/// Room that must stay free below the closure for the coroutine's own frames.
const MIN_FREE_STACK: usize = 8 * 1024;

/// Configures a coroutine before creating it: stack size and name.
///
/// ```
/// use costack::{Builder, Status};
///
/// let co = Builder::new()
///     .stack_size(64 * 1024)
///     .name("worker")
///     .create(|| costack::current().unwrap().name().map(str::to_owned));
/// assert_eq!(co.enter(), Status::Finished(Some("worker".to_owned())));
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    stack_size: usize,
    name: Option<Box<str>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the default stack size ([`DEFAULT_STACK_SIZE`], 1 MiB) and no name.
    pub fn new() -> Builder {
        Builder {
            stack_size: DEFAULT_STACK_SIZE,
            name: None,
        }
    }

    /// The usable stack size in bytes (rounded up to whole pages and to at least 16 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// A name, shown in panics about the coroutine, trace output and debugging tools.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into().into_boxed_str());
        self
    }

    /// Creates the coroutine; it does not run until entered.
    ///
    /// # Panics
    /// If no stack can be mapped (the message names the limit that was hit: memory or
    /// `vm.max_map_count`), or if the closure or its result does not fit in half the stack.
    pub fn create<F, R>(self, f: F) -> Coroutine<R>
    where
        F: FnOnce() -> R + 'static,
        R: 'static,
    {
        match self.try_create(f) {
            Ok(co) => co,
            Err(e) => no_stack(e),
        }
    }

    /// Creates the coroutine, or says why its stack could not be mapped.
    ///
    /// # Panics
    /// If the closure or its result does not fit in half the stack.
    pub fn try_create<F, R>(self, f: F) -> Result<Coroutine<R>, StackError>
    where
        F: FnOnce() -> R + 'static,
        R: 'static,
    {
        create_with(self.stack_size, self.name, f)
    }
}

/// Creates a coroutine with a stack of `stack_size` bytes (rounded as [`Stack::new`] does) and
/// `name`: [`Builder::try_create`], and [`Coroutine::new`] without a `Builder`.
///
/// Inlined, so that [`Coroutine::new`]'s constant size and absent name fold away its checks
/// and rounding, and its registers are its caller's: the body is a pool pop and the header's
/// stores.
///
/// # Panics
/// If the closure or its result does not fit in half the stack.
#[inline(always)]
fn create_with<F, R>(
    stack_size: usize,
    name: Option<Box<str>>,
    f: F,
) -> Result<Coroutine<R>, StackError>
where
    F: FnOnce() -> R + 'static,
    R: 'static,
{
    let size = round_stack_size(stack_size);
    let slot_size = size_of::<F>().max(size_of::<R>());
    let slot_align = align_of::<F>().max(align_of::<R>()).max(16);
    let needed = size_of::<Header>() + 64 + slot_size + slot_align + INIT_STACK + MIN_FREE_STACK;
    if slot_size > size / 2 || needed > size {
        too_big(slot_size, size);
    }
    let hdr = match pool::take(size) {
        Some(h) => h.as_ptr(),
        None => {
            let stack = fresh_stack(size).map_err(|e| *e)?;
            let hdr = Header::location(&stack);
            // SAFETY: `hdr` is the control-block location of this stack.
            unsafe { Header::own_stack(hdr, stack) };
            hdr
        }
    };
    // SAFETY: `hdr` is the control-block location of an unused stack whose `stack` field is
    // set; the layout leaves the header, slot and MIN_FREE_STACK bytes inside it (checked
    // above).
    let h = unsafe {
        Header::init::<F, R>(
            hdr,
            coroutine_main,
            f,
            next_id(),
            name,
            slot_size,
            slot_align,
        )
    };
    Ok(Coroutine {
        // SAFETY: the new coroutine's one reference is the handle's.
        handle: unsafe { CoHandle::adopt(h) },
        _result: PhantomData,
    })
}

/// The panic when a closure or its result does not fit in the stack.
#[cold]
#[inline(never)]
fn too_big(slot_size: usize, size: usize) -> ! {
    panic!(
        "costack: a coroutine closure or result of {slot_size} bytes does not fit in a \
         {size}-byte stack; box it or use a larger stack"
    )
}

/// The panic of [`Builder::create`] and [`Coroutine::new`] when no stack can be mapped.
#[cold]
#[inline(never)]
fn no_stack(e: StackError) -> ! {
    panic!("costack: {e}")
}

/// The next coroutine id of this thread. Before the thread's first, makes sure a stack overflow
/// in a coroutine will be reported, and arms the thread-exit policy.
#[inline]
fn next_id() -> CoId {
    CoId::next(|| {
        crate::overflow::init_thread();
        arm_exit_guard();
    })
}

/// Maps a new stack. Out of line, and with the error boxed, so that the common path (a pooled
/// stack) moves the `Stack` around as plain words.
#[cold]
#[inline(never)]
fn fresh_stack(size: usize) -> Result<Stack, Box<StackError>> {
    #[cfg_attr(not(costack_fibers), allow(unused_mut))]
    let mut stack = Stack::new(size).map_err(Box::new)?;
    // The fibers backend runs the stack's coroutines on a fiber of their own, made with it.
    #[cfg(costack_fibers)]
    match crate::backend::new_fiber(size) {
        Ok(fiber) => stack.set_fiber(fiber),
        Err(e) => {
            return Err(Box::new(crate::stack::system_error(
                size,
                "CreateFiberEx",
                e,
            )))
        }
    }
    Ok(stack)
}

/// A coroutine whose closure returns `R`: the handle [`Coroutine::new`] returns.
///
/// It dereferences to [`CoHandle`] for everything that does not depend on `R`.
///
/// Dropping the last handle to a coroutine that is suspended unwinds its stack, so every
/// destructor on it runs; the coroutine is entered one last time for that, and any
/// `yield_now` it reaches while unwinding panics. A coroutine that was never entered just drops
/// its closure.
///
/// ```
/// use costack::{yield_now, Coroutine, Status};
///
/// let co = Coroutine::new(|| {
///     for _ in 0..5 {
///         yield_now();
///     }
///     "done"
/// });
/// let mut enters = 1;
/// while co.enter() == Status::Yielded {
///     enters += 1;
/// }
/// assert_eq!(enters, 6); // 5 yields take 6 enters
/// ```
pub struct Coroutine<R = ()> {
    handle: CoHandle,
    _result: PhantomData<fn() -> R>,
}

impl<R: 'static> Coroutine<R> {
    /// Creates a coroutine with a default stack (1 MiB, from the thread's pool when it has
    /// one); it does not run until entered.
    ///
    /// # Panics
    /// If no stack can be mapped; the message names the limit hit. See [`Coroutine::try_new`].
    #[inline]
    pub fn new<F>(f: F) -> Coroutine<R>
    where
        F: FnOnce() -> R + 'static,
    {
        match create_with(DEFAULT_STACK_SIZE, None, f) {
            Ok(co) => co,
            Err(e) => no_stack(e),
        }
    }

    /// Creates a coroutine, or says which limit (memory, `vm.max_map_count`) stopped it.
    #[inline]
    pub fn try_new<F>(f: F) -> Result<Coroutine<R>, StackError>
    where
        F: FnOnce() -> R + 'static,
    {
        create_with(DEFAULT_STACK_SIZE, None, f)
    }

    /// Enters the coroutine: it runs on its own stack until it yields or returns.
    ///
    /// # Panics
    /// If the coroutine is already entered (itself, or an ancestor on the chain), has finished,
    /// or is scheduled by a deferred wake-up; and, with the original payload, if the coroutine
    /// panics.
    #[inline]
    pub fn enter(&self) -> Status<R> {
        let h = self.handle.header();
        // SAFETY: `self` keeps the header alive for the whole call.
        unsafe { enter_header(h) };
        if h.state() == FINISHED {
            match self.take_result() {
                Some(r) => Status::Finished(r),
                None => unreachable!("costack: finished coroutine without a result"),
            }
        } else {
            Status::Yielded
        }
    }

    /// Takes the return value of a coroutine that finished while entered through a
    /// [`CoHandle`]; `None` if it has not finished or the value was taken already.
    pub fn take_result(&self) -> Option<R> {
        // SAFETY: the vtable was built for this `R`: only `Coroutine<R>` of the matching type is
        // ever created over it.
        unsafe { self.handle.header().take_result::<R>() }
    }

    /// An untyped handle to this coroutine.
    pub fn handle(&self) -> CoHandle {
        self.handle.clone()
    }
}

impl<R> std::ops::Deref for Coroutine<R> {
    type Target = CoHandle;

    fn deref(&self) -> &CoHandle {
        &self.handle
    }
}

impl<R> fmt::Debug for Coroutine<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.handle, f)
    }
}
