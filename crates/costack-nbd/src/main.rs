//! `costack-nbd`: serve a file, or a disk in memory, over NBD.
//!
//! SIGINT and SIGTERM stop the server gracefully: it stops accepting, finishes the requests
//! in flight, flushes the export and exits 0. A second signal while that is going on exits at
//! once (status 1).

use clap::{Parser, ValueEnum};
use costack_aio::signal::{Signals, SIGINT, SIGTERM};
use costack_nbd::{serve, set_verbose, Config, Export, WritePath};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Serve a file, or an in-memory disk, over the Network Block Device protocol.
///
/// With FILE, clients read and write that file (or block device). Without it, they get a disk
/// in memory (--size, all zeroes at first, gone when the server exits).
///
/// Reach it with, for example:
///   qemu-img info nbd://127.0.0.1:10809
///   nbdinfo nbd://127.0.0.1:10809
///
/// SIGINT/SIGTERM: stop accepting, finish the requests in flight, flush, exit 0.
#[derive(Parser, Debug)]
#[command(name = "costack-nbd", version, verbatim_doc_comment)]
struct Args {
    /// The file or block device to serve; an in-memory disk if absent.
    file: Option<PathBuf>,

    /// Address to listen on.
    #[arg(
        short = 'b',
        long = "bind",
        default_value = "127.0.0.1",
        value_name = "ADDR"
    )]
    bind: IpAddr,

    /// TCP port to listen on (0: any free port, printed at start).
    #[arg(short, long, default_value_t = 10809)]
    port: u16,

    /// Export name. Clients asking for the empty (default) name get this export too.
    #[arg(short = 'x', long = "name", default_value = "", value_parser = export_name)]
    name: String,

    /// Refuse writes (advertised to clients as a read-only export).
    #[arg(short, long)]
    read_only: bool,

    /// Size of the in-memory disk, e.g. 1G, 512M, 4096 (ignored with FILE).
    #[arg(short, long, default_value = "1G", value_parser = parse_size)]
    size: u64,

    /// Event-loop threads; connections are spread over them [default: the number of CPUs].
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,

    /// Requests in flight per connection.
    #[arg(short = 'q', long = "in-flight", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    in_flight: u32,

    /// Where file writes the kernel cannot do without blocking go: `inline` copies them into
    /// the page cache on the loop thread; `aio` sends them through the loop's file I/O
    /// (io_uring, or worker threads) while the request waits.
    #[arg(long, value_enum, default_value_t = Writes::Inline)]
    writes: Writes,

    /// Bytes one connection may make the server hold (payloads, read data, queued replies);
    /// beyond it the server stops reading from that client until its replies are read.
    /// At least 33M.
    #[arg(long, value_name = "SIZE", default_value = "66M", value_parser = parse_size)]
    conn_buffer: u64,

    /// Bytes all connections together may hold (beyond 1 MiB each, kept for small requests)
    /// [default: 1/8 of the memory, 256M to 1G].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    total_buffer: Option<u64>,

    /// Log connections and errors to stderr.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Writes {
    Inline,
    Aio,
}

fn export_name(s: &str) -> Result<String, String> {
    if s.len() > 4096 {
        return Err("at most 4096 bytes".into());
    }
    if s.contains('\0') {
        return Err("must not contain NUL".into());
    }
    Ok(s.to_owned())
}

/// Parses `4096`, `64K`, `512M`, `1G`, `2T` (also with `iB`/`B`): binary units.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown unit in {s:?} (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// The next SIGINT or SIGTERM. If the listener cannot wait (its eventfd cannot be polled,
/// which does not happen to a valid descriptor), exits at once as a second signal would.
fn wait_signal(sigs: &mut Signals) -> i32 {
    match sigs.recv() {
        Ok(sig) => sig,
        Err(e) => {
            eprintln!("costack-nbd: cannot wait for signals: {e}");
            std::process::exit(1);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Buffers of 256 KiB and more (read data, write payloads up to 32 MiB) come straight from
    // mmap and go back with munmap when freed. Left alone, glibc raises its mmap threshold to
    // the size of each large block freed, so that later 32 MiB buffers come from the heap, whose
    // freed memory stays with the process: RSS stayed at hundreds of MiB after a burst. Setting
    // the threshold turns that dynamic raising off. (Buffers reused over and over stay in the
    // loops' pools: no mmap per request for them.)
    // SAFETY: mallopt only changes allocator settings; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
    set_verbose(args.verbose);
    let writes = match args.writes {
        Writes::Inline => WritePath::Inline,
        Writes::Aio => WritePath::Aio,
    };
    let export = match &args.file {
        Some(path) => Export::file(&args.name, path, args.read_only, writes),
        None => Export::memory(&args.name, args.size, args.read_only),
    };
    let export = match export {
        Ok(e) => Arc::new(e),
        Err(e) => {
            match &args.file {
                Some(p) => eprintln!("costack-nbd: cannot open {}: {e}", p.display()),
                None => eprintln!("costack-nbd: cannot create the in-memory disk: {e}"),
            }
            return ExitCode::from(1);
        }
    };
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("costack-nbd: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    // Before any thread starts (the registry's advice: no handler is installed concurrently).
    // From here on SIGINT and SIGTERM are counted in `sigs` instead of ending the process.
    let mut sigs = match Signals::new(&[SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("costack-nbd: cannot handle SIGINT/SIGTERM: {e}");
            return ExitCode::from(1);
        }
    };
    let threads = args.threads.map(|t| t as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let cfg = Config {
        threads,
        max_in_flight: args.in_flight as usize,
        conn_buffer: usize::try_from(args.conn_buffer).unwrap_or(usize::MAX),
        total_buffer: args
            .total_buffer
            .map_or_else(costack_nbd::server::default_total_buffer, |t| {
                usize::try_from(t).unwrap_or(usize::MAX)
            }),
        ..Config::default()
    };
    let size = export.size();
    let what = match &args.file {
        Some(p) => p.display().to_string(),
        None => "memory".to_owned(),
    };
    let server = match serve(export, listener, cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("costack-nbd: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "costack-nbd: serving {what} ({size} bytes{}) as {:?} on {} with {threads} thread(s)",
        if args.read_only { ", read-only" } else { "" },
        args.name,
        server.local_addr(),
    );
    // The main thread is not a task: `recv` blocks it in poll(2) until a signal is handled.
    let sig = wait_signal(&mut sigs);
    eprintln!("costack-nbd: signal {sig}: finishing the requests in flight");
    // A second signal while the server winds down ends the process at once.
    std::thread::spawn(move || {
        let sig = wait_signal(&mut sigs);
        eprintln!("costack-nbd: signal {sig} again: exiting now");
        std::process::exit(1);
    });
    match server.shutdown() {
        Ok(()) => {
            eprintln!("costack-nbd: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("costack-nbd: final flush failed: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
