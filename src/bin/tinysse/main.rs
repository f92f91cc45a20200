//! The `tinysse` binary: flags in, server up, wait for SIGINT/SIGTERM. It
//! uses the library's public API only, as any embedding program would.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

mod config;
mod demo;
mod host;

use config::{Command, Config};

/// Logs to stderr; `TINYSSE_LOG=debug|info|warn|error|off` picks the level.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "tinysse: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

/// Raises the soft limit on open descriptors to the hard limit: each stream
/// holds two descriptors (tiny_http duplicates every socket), so the usual
/// soft limit of 1024 would cap the server near 500 streams, well below
/// `--max-streams`.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the one local struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            log::warn!("cannot raise the open files limit");
        }
    }
}

fn main() -> ExitCode {
    let level = std::env::var("TINYSSE_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let _ = log::set_logger(&StderrLog).map(|()| log::set_max_level(level));

    let config = match Config::parse(std::env::args_os().skip(1), |k| std::env::var(k).ok()) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Help) => {
            print!("{}", config::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("tinysse {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tinysse: {e} (see --help)");
            return ExitCode::from(2);
        }
    };

    raise_fd_limit();

    let (signal_tx, signal_rx) = crossbeam_channel::bounded::<()>(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = signal_tx.try_send(());
    }) {
        eprintln!("tinysse: cannot install the signal handler: {e}");
        return ExitCode::from(1);
    }

    // A key file that cannot be read or used is a bad value: exit 2, before
    // anything starts.
    let builder = match config.builder() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tinysse: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match builder.start() {
        Ok(s) => s,
        // A store file that is not ours, corrupt or unwritable is a bad
        // value given on the command line, like a bad flag: exit 2.
        Err(e @ tinysse::StartError::Store(_)) => {
            eprintln!("tinysse: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("tinysse: {e}");
            return ExitCode::from(1);
        }
    };
    let producer = if config.demo {
        match demo::Producer::start(server.hub().clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("tinysse: cannot start the demo producer: {e}");
                server.join();
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{}", server.addr());
    let _ = out.flush();
    drop(out);

    let _ = signal_rx.recv();
    log::info!("shutting down");
    // Before the server: the producer publishes into its hub until it stops.
    if let Some(p) = producer {
        p.stop();
    }
    // Streams get most of the 2 s budget; whatever is still stuck in a write
    // to a dead client is cut off by the process exit.
    if !server.join_timeout(Duration::from_millis(1500)) {
        log::warn!("some streams or server threads did not end in time");
    }
    ExitCode::SUCCESS
}
