//! The benchmark groups, what one operation of each means, and which
//! implementations each group compares.
//!
//! The benchmark and the report both read this table, so that a function the
//! benchmark registers is a row the report knows how to print.

/// Label of costack in criterion IDs, reports and the chart.
///
/// One build of this crate holds costack with exactly one context-switch
/// backend, so the same benchmark code reports as `costack` (the assembly
/// backend) or as `costack-ucontext` (built with this crate's `ucontext`
/// feature, which selects costack's libc `swapcontext` backend) or, on Windows,
/// `costack-fibers` (feature `fibers`: costack on Windows Fibers).
pub const COSTACK: &str = if cfg!(feature = "ucontext") {
    "costack-ucontext"
} else if cfg!(feature = "fibers") {
    "costack-fibers"
} else {
    "costack"
};

/// Label of costack on its assembly backend, whatever this build uses.
pub const COSTACK_ASM: &str = "costack";
/// Label of costack on its `swapcontext` backend, whatever this build uses.
pub const COSTACK_UCONTEXT: &str = "costack-ucontext";
/// Label of the corosensei crate, the main reference point.
pub const COROSENSEI: &str = "corosensei";

/// Number of values the `generator_iter` benchmark draws from each generator.
pub const GENERATOR_ITER_LEN: u64 = 1000;

/// Depth of the coroutine chain in the `nesting_1000` benchmark.
pub const NESTING_DEPTH: usize = 1000;

/// Usable stack size of the coroutines in `create_fresh`: every iteration maps,
/// uses and unmaps a stack of this size.
pub const FRESH_STACK_SIZE: usize = 1 << 20;

/// One benchmark group: one criterion group, one cluster in the chart.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// Criterion group name, also the directory under `target/criterion`.
    pub name: &'static str,
    /// What one reported operation is.
    pub operation: &'static str,
    /// How many operations one criterion iteration performs. The report
    /// divides criterion's per-iteration time by this.
    pub ops_per_iteration: u64,
    /// Function IDs within the group, in report order. An ID is an
    /// implementation label, optionally followed by `/` and a variant.
    pub functions: &'static [&'static str],
}

/// All groups, in benchmark and report order.
pub const GROUPS: &[Group] = &[
    Group {
        name: "roundtrip",
        operation: "resume + yield of a started coroutine",
        ops_per_iteration: 1,
        functions: &[
            COSTACK_ASM,
            COSTACK_UCONTEXT,
            COROSENSEI,
            "context",
            "generator",
            "swapcontext",
            "tokio",
        ],
    },
    Group {
        name: "create_pooled",
        operation: "create + run to completion + drop, stack reused",
        ops_per_iteration: 1,
        functions: &[
            COSTACK_ASM,
            COSTACK_UCONTEXT,
            COROSENSEI,
            "generator",
            "tokio",
            "std-thread",
        ],
    },
    Group {
        name: "cost",
        operation: "create + enter + yield + enter to completion + drop, stack reused \
                    (QEMU's /perf/cost)",
        ops_per_iteration: 1,
        functions: &[COSTACK_ASM, COSTACK_UCONTEXT, COROSENSEI],
    },
    Group {
        name: "create_fresh",
        operation: "create with a fresh 1 MiB mmap'd stack + run + drop",
        ops_per_iteration: 1,
        functions: &[COSTACK_ASM, COSTACK_UCONTEXT, COROSENSEI],
    },
    Group {
        name: "nesting_1000",
        operation: "whole chain of 1000 nested coroutines, down and back",
        ops_per_iteration: 1,
        functions: &[
            COSTACK_ASM,
            COSTACK_UCONTEXT,
            COROSENSEI,
            "costack/default-pool",
            "costack-ucontext/default-pool",
        ],
    },
    Group {
        name: "generator_iter",
        operation: "one value drawn from a generator",
        ops_per_iteration: GENERATOR_ITER_LEN,
        functions: &[COSTACK_ASM, COSTACK_UCONTEXT, COROSENSEI, "generator"],
    },
    Group {
        name: "comutex",
        operation: "CoMutex lock + unlock (uncontended) or one hand-off between two coroutines",
        ops_per_iteration: 1,
        functions: &[
            "costack/uncontended",
            "costack-ucontext/uncontended",
            "costack/handoff",
            "costack-ucontext/handoff",
        ],
    },
    Group {
        name: "bridge",
        operation: "await of a ready future from sync code (ready-future), or one 64-byte echo \
                    round trip through a tokio TCP server (echo)",
        ops_per_iteration: 1,
        functions: &[
            "costack/ready-future",
            "async/ready-future",
            "costack/echo",
            "tokio/echo",
        ],
    },
];

/// Splits a function ID into its implementation label and its variant.
///
/// `"costack/handoff"` gives `("costack", Some("handoff"))`, `"tokio"` gives
/// `("tokio", None)`.
pub fn split_function(id: &str) -> (&str, Option<&str>) {
    match id.split_once('/') {
        Some((implementation, variant)) => (implementation, Some(variant)),
        None => (id, None),
    }
}

/// Looks a group up by name.
pub fn group(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_listed() {
        for g in GROUPS {
            assert!(g.ops_per_iteration > 0, "{}", g.name);
            assert!(!g.functions.is_empty(), "{}", g.name);
        }
        assert!(group("roundtrip").unwrap().functions.contains(&COSTACK));
        assert!(group("nope").is_none());
    }

    #[test]
    fn split() {
        assert_eq!(split_function("tokio"), ("tokio", None));
        assert_eq!(
            split_function("costack-ucontext/handoff"),
            ("costack-ucontext", Some("handoff"))
        );
    }
}
