//! `costack-nbd`: serve a file, or a disk in memory, over NBD.
//!
//! Start-up, in this order: the command line (the `--help` examples are made from its `-p`,
//! `-x` and `-b`), the log subscriber (`-v`, `RUST_LOG`), the export, the listening socket,
//! the pid file (opened and locked); then, with `--fork`, the fork, while the process still
//! has one thread; then, in the server's process, the signal listener, the server's threads,
//! the pid, the start line, and (`--fork`) the word to the parent that it may exit.
//!
//! SIGINT and SIGTERM stop the server gracefully: it stops accepting, finishes the requests
//! in flight, flushes the export and exits 0. A second signal while that is going on exits at
//! once (status 1).

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use costack_aio::signal::{Signals, SIGINT, SIGTERM};
use costack_nbd::transport::{Listener, TlsCredentials, TlsMode};
use costack_nbd::{serve, Config, Export, WritePath};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Serve a file, or an in-memory disk, over the Network Block Device protocol.
///
/// With FILE, clients read and write that file (or block device). Without it, they get a disk
/// in memory (--size, all zeroes at first, gone when the server exits).
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

    /// A line for humans about the export, sent to clients that ask (NBD_INFO_DESCRIPTION,
    /// and LIST); nbdinfo prints it. At most 4096 bytes [default: what is served].
    #[arg(short = 'D', long, value_name = "TEXT", value_parser = description)]
    description: Option<String>,

    /// Refuse writes (advertised to clients as a read-only export).
    #[arg(short, long)]
    read_only: bool,

    /// Size of the in-memory disk, e.g. 1G, 512M, 4096 (ignored with FILE).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,

    /// Event-loop threads; connections are spread over them [default: the number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,

    /// Adaptive polling (QEMU's iothread `poll-max-ns`): before a loop thread sleeps in the
    /// kernel it polls for new requests for a self-tuning window of at most NS nanoseconds,
    /// which saves the sleep and wake-up on each request at queue depth 1 but keeps a CPU busy
    /// meanwhile. Worth it only when every loop thread has a CPU to itself, apart from the
    /// clients'. 0: off.
    #[arg(long = "poll-max-ns", value_name = "NS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    poll_max_ns: u64,

    /// Requests in flight per connection.
    #[arg(short = 'q', long = "in-flight", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    in_flight: u32,

    /// Where file writes the kernel cannot do without blocking go: `inline` copies them into
    /// the page cache on the loop thread; `aio` sends them through the loop's file I/O
    /// (io_uring, or worker threads) while the request waits.
    #[arg(long, value_enum, default_value_t = Writes::Inline)]
    writes: Writes,

    /// Disconnect a client that has not finished the handshake SECS seconds after it connected
    /// (0: no limit).
    #[arg(long = "handshake-timeout", value_name = "SECS", default_value_t = 10)]
    handshake_timeout: u32,

    /// Serve at most NUM connections at once, those still in the handshake included; a
    /// connection beyond them is closed at once (0: no limit).
    #[arg(short = 'e', long = "shared", visible_alias = "max-connections", value_name = "NUM",
          default_value_t = Config::default().max_connections)]
    shared: usize,

    /// Listen on a Unix socket at PATH instead of TCP (a stale socket file left there is
    /// replaced; the file is removed at exit). With systemd socket activation (LISTEN_FDS set
    /// for this process) the inherited socket is used and -b, -p and -k are refused.
    #[arg(short = 'k', long = "socket", value_name = "PATH", conflicts_with_all = ["bind", "port"])]
    socket: Option<PathBuf>,

    /// TLS: `off`, `on` (offered, plaintext clients served too) or `require` (clients must
    /// start TLS first) [default: require with --tls-certificates, else off].
    #[arg(long, value_enum, value_name = "MODE")]
    tls: Option<TlsArg>,

    /// Directory with the TLS certificates, in the layout qemu-nbd and nbdkit use:
    /// server-cert.pem, server-key.pem, and ca-cert.pem (for --tls-verify-peer).
    #[arg(long, value_name = "DIR")]
    tls_certificates: Option<PathBuf>,

    /// Require a client certificate signed by the CA in ca-cert.pem.
    #[arg(long, requires = "tls_certificates")]
    tls_verify_peer: bool,

    /// Bytes one connection may make the server hold (payloads, read data, queued replies);
    /// beyond it the server stops reading from that client until its replies are read.
    /// At least 33M.
    #[arg(long, value_name = "SIZE", default_value = "66M", value_parser = parse_size)]
    conn_buffer: u64,

    /// Bytes all connections together may hold (beyond 1 MiB each, kept for small requests)
    /// [default: 1/8 of the memory, 256M to 1G].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    total_buffer: Option<u64>,

    /// Write the server's process id to PATH once it is listening (locked while it runs,
    /// removed when it exits).
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,

    /// Detach once listening: the command returns (status 0) when the server is serving, or
    /// fails (status 1) with the server's error. The server goes on in a new session, its
    /// logs on the same stderr.
    #[arg(long)]
    fork: bool,

    /// More log lines on stderr: -v connections, -vv refused requests, -vvv every request.
    /// RUST_LOG (e.g. RUST_LOG=costack_nbd=debug) overrides it.
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TlsArg {
    Off,
    On,
    Require,
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

/// The TLS mode from --tls and --tls-certificates (qemu-nbd's rule: certificates without
/// --tls mean TLS required).
fn tls_mode(args: &Args) -> Result<TlsMode, String> {
    let creds = || -> Result<TlsCredentials, String> {
        let Some(dir) = &args.tls_certificates else {
            return Err("--tls on/require needs --tls-certificates DIR".into());
        };
        TlsCredentials::from_dir(dir, args.tls_verify_peer)
            .map_err(|e| format!("TLS certificates: {e}"))
    };
    let mode = args.tls.unwrap_or(if args.tls_certificates.is_some() {
        TlsArg::Require
    } else {
        TlsArg::Off
    });
    Ok(match mode {
        TlsArg::Off if args.tls_verify_peer => {
            return Err("--tls-verify-peer needs TLS (--tls on or require)".into())
        }
        TlsArg::Off => TlsMode::Off,
        TlsArg::On => TlsMode::On(creds()?),
        TlsArg::Require => TlsMode::Require(creds()?),
    })
}

fn description(s: &str) -> Result<String, String> {
    costack_nbd::export::check_description(s)?;
    Ok(s.to_owned())
}

/// The target of the binary's own events (start, signals, stop), so that the default filter
/// can show them without the library's connection events.
const MAIN: &str = "costack_nbd::main";

/// What `-p`, `-x` and `-b` say on the command line, read before clap parses it so that the
/// help's examples can use them. Last one wins, as with clap; a value clap will refuse is
/// ignored here (clap then reports it).
#[derive(Debug, Default, PartialEq)]
struct Seen {
    port: Option<String>,
    name: Option<String>,
    bind: Option<String>,
}

/// Scans `argv` (without the program name) for the values of `port`, `name` and `bind`,
/// knowing from `cmd` which flags take a value: `-p 1`, `-p1`, `--port 1`, `--port=1`, and
/// short flags bunched together (`-rp1`). Stops at `--`.
fn prescan(cmd: &clap::Command, argv: &[OsString]) -> Seen {
    let mut seen = Seen::default();
    let mut record = |id: &str, v: &str| {
        let v = v.to_owned();
        match id {
            "port" if v.parse::<u16>().is_ok() => seen.port = Some(v),
            "name" if export_name(&v).is_ok() => seen.name = Some(v),
            "bind" if v.parse::<IpAddr>().is_ok() => seen.bind = Some(v),
            _ => {}
        }
    };
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    let mut i = 0;
    while i < argv.len() {
        let Some(word) = argv[i].to_str() else {
            i += 1;
            continue;
        };
        i += 1;
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (flag, inline) = match long.split_once('=') {
                Some((f, v)) => (f, Some(v)),
                None => (long, None),
            };
            let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(flag)) else {
                continue;
            };
            if !takes_value(arg) {
                continue;
            }
            let value = match inline {
                Some(v) => Some(v),
                None => {
                    i += 1;
                    argv.get(i - 1).and_then(|v| v.to_str())
                }
            };
            if let Some(v) = value {
                record(arg.get_id().as_str(), v);
            }
        } else if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (at, c) in shorts.char_indices() {
                let Some(arg) = cmd.get_arguments().find(|a| a.get_short() == Some(c)) else {
                    break;
                };
                if !takes_value(arg) {
                    continue;
                }
                let rest = &shorts[at + c.len_utf8()..];
                let value = if rest.is_empty() {
                    i += 1;
                    argv.get(i - 1).and_then(|v| v.to_str())
                } else {
                    Some(rest.strip_prefix('=').unwrap_or(rest))
                };
                if let Some(v) = value {
                    record(arg.get_id().as_str(), v);
                }
                break;
            }
        }
    }
    seen
}

/// `name` as the path of an NBD URI: unreserved characters as they are, the rest
/// percent-encoded.
fn uri_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The help's closing examples, with the port, name and address the command line gives.
fn examples(seen: &Seen) -> String {
    let port = seen.port.as_deref().unwrap_or("10809");
    let host = match seen.bind.as_deref().map(|b| b.parse::<IpAddr>()) {
        Some(Ok(ip)) if ip.is_unspecified() => "HOST".to_owned(),
        Some(Ok(IpAddr::V6(ip))) => format!("[{ip}]"),
        Some(Ok(ip)) => ip.to_string(),
        _ => "127.0.0.1".to_owned(),
    };
    let port_shown = if port == "0" { "PORT" } else { port };
    let name = seen.name.as_deref().unwrap_or("");
    let uri = format!("nbd://{host}:{port_shown}/{}", uri_path(name));
    let mut flags = String::new();
    if let Some(b) = &seen.bind {
        flags.push_str(&format!(" -b {b}"));
    }
    if let Some(p) = &seen.port {
        flags.push_str(&format!(" -p {p}"));
    }
    if !name.is_empty() {
        flags.push_str(&format!(" -x {}", shell_word(name)));
    }
    let mut text = String::from("Examples:\n  # serve a file; any NBD client reaches it\n");
    if port == "0" {
        text.push_str("  # (with -p 0, PORT is the port the start line shows)\n");
    }
    text.push_str(&format!(
        "  costack-nbd{flags} disk.img\n\
         \x20 qemu-img info {uri}\n\
         \x20 nbdinfo {uri}\n\
         \x20 qemu-io -f raw -c 'read -v 0 512' {uri}\n\
         \x20 nbdcopy {uri} copy.img\n\
         \n\
         \x20 # 4 GiB in memory, with a description for the clients\n\
         \x20 costack-nbd{flags} --size 4G -D 'scratch disk'\n\
         \n\
         \x20 # in the background; stop it (flush, then exit) with SIGTERM\n\
         \x20 costack-nbd{flags} --fork --pid-file /run/costack-nbd.pid disk.img\n\
         \x20 kill $(cat /run/costack-nbd.pid)\n\
         \n\
         \x20 # log connections (-vv: refused requests too, -vvv: every request)\n\
         \x20 costack-nbd{flags} -v disk.img\n\
         \x20 RUST_LOG=costack_nbd=debug costack-nbd{flags} disk.img\n"
    ));
    text
}

/// `s` quoted for a POSIX shell if it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/:=@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command line, with the help's examples made from `argv` itself.
fn parse_args() -> (Args, ArgMatches) {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cmd = Args::command();
    let seen = prescan(&cmd, argv.get(1..).unwrap_or(&[]));
    let text = examples(&seen);
    let mut cmd = cmd.after_help(text.clone()).after_long_help(text);
    let matches = cmd
        .try_get_matches_from_mut(argv)
        .unwrap_or_else(|e| e.exit());
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit());
    (args, matches)
}

/// Installs the stderr log subscriber: `RUST_LOG` if set, else the level `-v` asks for. By
/// default only warnings, errors and the binary's start and stop lines are shown.
fn init_logs(verbose: u8) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(&spec).map_err(|e| format!("bad RUST_LOG {spec:?}: {e}"))?
        }
        _ => {
            let spec = match verbose {
                0 => format!("warn,{MAIN}=info"),
                1 => "info".to_owned(),
                2 => "debug".to_owned(),
                _ => "trace".to_owned(),
            };
            EnvFilter::new(spec)
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))
}

/// The pid file, locked from when it is opened until the process ends.
struct PidFile {
    path: PathBuf,
    file: File,
}

/// The pid file's path once it holds our pid, for the exits that skip destructors.
static PID_PATH: OnceLock<PathBuf> = OnceLock::new();

impl PidFile {
    /// Opens (creates) `path` and locks it, so that a second server given the same file
    /// refuses to start; nothing is written yet.
    fn open(path: &Path) -> Result<PidFile, String> {
        let shown = path.display();
        // Absolute: a --fork server leaves the working directory.
        let path = std::path::absolute(path).map_err(|e| format!("pid file {shown}: {e}"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|e| format!("cannot open the pid file {shown}: {e}"))?;
        // SAFETY: flock(2) on a descriptor `file` owns; it only takes or refuses a lock.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            let mut held = String::new();
            let _ = (&file).read_to_string(&mut held);
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => format!(
                    "the pid file {shown} is locked by another server (pid {})",
                    held.trim()
                ),
                _ => format!("cannot lock the pid file {shown}: {e}"),
            });
        }
        Ok(PidFile { path, file })
    }

    /// Writes this process's id (of the daemon, after a fork).
    fn write_pid(&mut self) -> Result<(), String> {
        let shown = self.path.display();
        self.file
            .set_len(0)
            .and_then(|()| {
                self.file
                    .write_all(format!("{}\n", std::process::id()).as_bytes())
            })
            .map_err(|e| format!("cannot write the pid file {shown}: {e}"))?;
        let _ = PID_PATH.set(self.path.clone());
        Ok(())
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only the process whose pid it holds removes it (not the parent of a --fork).
        if PID_PATH.get().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a `--fork` server tells the command that started it how the start went.
struct Notify(Option<File>);

impl Notify {
    /// Reports an error: through the pipe after a fork (the parent prints it and exits 1),
    /// on stderr otherwise. Returns the exit status.
    fn fail(&mut self, msg: &str) -> ExitCode {
        match self.0.take() {
            Some(mut pipe) => {
                let _ = pipe.write_all(format!("costack-nbd: {msg}\n").as_bytes());
            }
            None => eprintln!("costack-nbd: {msg}"),
        }
        ExitCode::from(1)
    }

    /// Tells the parent the server is serving; it exits 0.
    fn ready(&mut self) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(&[0]);
        }
    }
}

/// Forks: the parent waits until the child reports (through a pipe) that it serves, and exits
/// 0, or 1 with the child's error; the child returns, in a session of its own, with its end
/// of the pipe, stdin and stdout on /dev/null and `/` as its directory.
///
/// Must be called while the process has one thread: the child of a multi-threaded process
/// may only call async-signal-safe functions.
fn daemonize() -> Result<Notify, String> {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count());
    if !matches!(threads, Ok(1)) {
        return Err(format!(
            "--fork: the process must have one thread when it forks (it has {threads:?})"
        ));
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array it is given, of the right size.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("--fork: pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: the two descriptors were just created by pipe2 and are owned by nobody else.
    let (read_end, write_end) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: the process has a single thread (checked above), so the child is a full copy
    // and may go on running ordinary Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("--fork: fork: {}", io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(write_end);
        let mut msg = Vec::new();
        let _ = (&read_end).read_to_end(&mut msg);
        if msg == [0] {
            std::process::exit(0);
        }
        if msg.is_empty() {
            eprintln!("costack-nbd: the server (pid {pid}) ended before it was serving");
        } else {
            eprint!("{}", String::from_utf8_lossy(&msg));
        }
        std::process::exit(1);
    }
    drop(read_end);
    // SAFETY: setsid(2) takes no pointers; the child of a fork is never a group leader.
    if unsafe { libc::setsid() } < 0 {
        return Err(format!("--fork: setsid: {}", io::Error::last_os_error()));
    }
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("--fork: /dev/null: {e}"))?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: dup2(2) on descriptors we own (`null`) and the standard ones; Rust's stdin
        // and stdout handles keep using fds 0 and 1, now /dev/null.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(format!("--fork: dup2: {}", io::Error::last_os_error()));
        }
    }
    let _ = std::env::set_current_dir("/");
    Ok(Notify(Some(write_end)))
}

/// The next SIGINT or SIGTERM. If the listener cannot wait (its eventfd cannot be polled,
/// which does not happen to a valid descriptor), exits at once as a second signal would.
fn wait_signal(sigs: &mut Signals) -> i32 {
    match sigs.recv() {
        Ok(sig) => sig,
        Err(e) => {
            tracing::error!(target: MAIN, error = %e, "cannot wait for signals: exiting");
            exit_now();
        }
    }
}

/// Exits at once with status 1, removing the pid file.
fn exit_now() -> ! {
    if let Some(p) = PID_PATH.get() {
        let _ = std::fs::remove_file(p);
    }
    std::process::exit(1);
}

fn main() -> ExitCode {
    let (args, matches) = parse_args();
    if let Err(e) = init_logs(args.verbose) {
        eprintln!("costack-nbd: {e}");
        return ExitCode::from(2);
    }
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
    // SAFETY: called once, before any other thread starts; nothing else
    // in this process owns fd 3.
    let activated = match unsafe { Listener::from_systemd() } {
        Ok(l) => l,
        Err(e) => {
            eprintln!("costack-nbd: {e}");
            return ExitCode::from(1);
        }
    };
    if activated.is_some() {
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        if let Some(flag) = [
            ("bind", "-b/--bind"),
            ("port", "-p/--port"),
            ("socket", "-k/--socket"),
        ]
        .iter()
        .find_map(|(id, flag)| given(id).then_some(*flag))
        {
            eprintln!(
                "costack-nbd: {flag} cannot be used with socket activation (LISTEN_FDS): \
                 the server listens on the socket it was given"
            );
            return ExitCode::from(1);
        }
    }
    let tls = match tls_mode(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("costack-nbd: {e}");
            return ExitCode::from(1);
        }
    };
    let writes = match args.writes {
        Writes::Inline => WritePath::Inline,
        Writes::Aio => WritePath::Aio,
    };
    let export = match &args.file {
        Some(path) => Export::file(&args.name, path, args.read_only, writes),
        None => Export::memory(&args.name, args.size, args.read_only),
    };
    let export = export.and_then(|e| match &args.description {
        Some(d) => e.with_description(d),
        None => Ok(e),
    });
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
    let listener = match (activated, &args.socket) {
        (Some(l), _) => l,
        (None, Some(path)) => match Listener::unix(path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("costack-nbd: cannot listen on {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        (None, None) => {
            let addr = SocketAddr::new(args.bind, args.port);
            match Listener::tcp(addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("costack-nbd: cannot listen on {addr}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    let mut pid_file = match args.pid_file.as_deref().map(PidFile::open).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("costack-nbd: {e}");
            return ExitCode::from(1);
        }
    };
    // Listening, and still one thread: fork now (the parent exits inside, once the child
    // reports). Everything below runs in the server's process.
    let mut notify = if args.fork {
        match daemonize() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("costack-nbd: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        Notify(None)
    };
    // Before any thread starts (the registry's advice: no handler is installed concurrently).
    // From here on SIGINT and SIGTERM are counted in `sigs` instead of ending the process.
    let mut sigs = match Signals::new(&[SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => return notify.fail(&format!("cannot handle SIGINT/SIGTERM: {e}")),
    };
    let threads = args.threads.map(|t| t as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let cfg = Config {
        threads,
        max_in_flight: args.in_flight as usize,
        handshake_timeout: Some(Duration::from_secs(args.handshake_timeout.into())),
        max_connections: args.shared,
        tls,
        conn_buffer: usize::try_from(args.conn_buffer).unwrap_or(usize::MAX),
        total_buffer: args
            .total_buffer
            .map_or_else(costack_nbd::server::default_total_buffer, |t| {
                usize::try_from(t).unwrap_or(usize::MAX)
            }),
        poll_max: Duration::from_nanos(args.poll_max_ns),
        ..Config::default()
    };
    let size = export.size();
    let what = match &args.file {
        Some(p) => p.display().to_string(),
        None => "memory".to_owned(),
    };
    let tls_note = match &cfg.tls {
        TlsMode::Off => "",
        TlsMode::On(_) => ", TLS offered",
        TlsMode::Require(_) => ", TLS required",
    };
    let server = match serve(export, listener, cfg) {
        Ok(s) => s,
        Err(e) => return notify.fail(&format!("cannot start: {e}")),
    };
    if let Some(p) = pid_file.as_mut() {
        if let Err(e) = p.write_pid() {
            drop(server);
            return notify.fail(&e);
        }
    }
    tracing::info!(
        target: MAIN,
        pid = std::process::id(),
        "serving {what} ({size} bytes{}) as {:?} on {} with {threads} thread(s){tls_note}",
        if args.read_only { ", read-only" } else { "" },
        args.name,
        server.address(),
    );
    notify.ready();
    // The main thread is not a task: `recv` blocks it in poll(2) until a signal is handled.
    let sig = wait_signal(&mut sigs);
    tracing::info!(target: MAIN, "signal {sig}: finishing the requests in flight");
    // A second signal while the server winds down ends the process at once.
    std::thread::spawn(move || {
        let sig = wait_signal(&mut sigs);
        tracing::warn!(target: MAIN, "signal {sig} again: exiting now");
        exit_now();
    });
    let status = match server.shutdown() {
        Ok(()) => {
            tracing::info!(target: MAIN, "stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(target: MAIN, error = %e, "final flush failed");
            ExitCode::from(1)
        }
    };
    drop(pid_file);
    status
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

    fn scan(args: &[&str]) -> Seen {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        prescan(&Args::command(), &argv)
    }

    fn seen(port: Option<&str>, name: Option<&str>, bind: Option<&str>) -> Seen {
        Seen {
            port: port.map(str::to_owned),
            name: name.map(str::to_owned),
            bind: bind.map(str::to_owned),
        }
    }

    #[test]
    fn prescan_finds_port_name_and_bind_in_every_form() {
        assert_eq!(scan(&[]), seen(None, None, None));
        assert_eq!(
            scan(&["-p", "1", "-x", "a", "-b", "::1"]),
            seen(Some("1"), Some("a"), Some("::1"))
        );
        assert_eq!(
            scan(&["--port=2", "--name", "b", "--bind=10.0.0.1"]),
            seen(Some("2"), Some("b"), Some("10.0.0.1"))
        );
        // Bunched short flags, values attached, last one wins.
        assert_eq!(
            scan(&["-rvp3", "-xc", "-p", "4"]),
            seen(Some("4"), Some("c"), None)
        );
        // A value that is another flag's: -D takes "-p", which is no port.
        assert_eq!(scan(&["-D", "-p", "-x", "d"]), seen(None, Some("d"), None));
        // The FILE operand and everything after `--` are not flags.
        assert_eq!(scan(&["disk.img", "--", "-p", "5"]), seen(None, None, None));
        // Values clap will refuse are left to clap; a missing value too.
        assert_eq!(
            scan(&["-p", "99999", "-b", "nope", "-x"]),
            seen(None, None, None)
        );
    }

    #[test]
    fn examples_quote_and_encode() {
        assert_eq!(uri_path("disk0"), "disk0");
        assert_eq!(uri_path("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(shell_word("disk0"), "disk0");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        let t = examples(&seen(Some("0"), None, Some("0.0.0.0")));
        assert!(t.contains("  nbdinfo nbd://HOST:PORT/\n"), "{t}");
        assert!(
            t.contains("  costack-nbd -b 0.0.0.0 -p 0 disk.img\n"),
            "{t}"
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
