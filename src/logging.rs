//! The daemon's logs: `tracing` events printed to stderr by tracing-subscriber's fmt layer
//! (timestamp, level, target, message and fields). The level sits behind a reload layer so
//! `carpioctl log verbose|brief` can change it at run time, as relayctl's `log verbose|brief`
//! does for relayd (`log_setverbose`): brief shows INFO and above, verbose DEBUG; `carpio -v`
//! starts verbose, `-vv` at TRACE.

use std::sync::OnceLock;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, fmt, reload};

static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();

/// The level of `-v` given `count` times.
pub fn level_of(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the stderr subscriber (once per process; later calls only set the level).
pub fn init(verbose: u8) {
    let level = level_of(verbose);
    if let Some(h) = LEVEL.get() {
        let _ = h.modify(|l| *l = level);
        return;
    }
    let (filter, handle) = reload::Layer::new(level);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr).with_ansi(false))
        .try_init()
        .is_ok();
    if installed {
        let _ = LEVEL.set(handle);
    }
}

/// `log verbose` (DEBUG) or `log brief` (INFO). Returns false before [`init`].
pub fn set_verbose(verbose: bool) -> bool {
    let level = if verbose {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    LEVEL
        .get()
        .is_some_and(|h| h.modify(|l| *l = level).is_ok())
}

/// The level now in force (None before [`init`]).
pub fn current() -> Option<LevelFilter> {
    LEVEL.get().and_then(|h| h.clone_current())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_switch_at_run_time() {
        assert_eq!(level_of(0), LevelFilter::INFO);
        assert_eq!(level_of(1), LevelFilter::DEBUG);
        assert_eq!(level_of(5), LevelFilter::TRACE);
        init(0);
        // Another test may have installed a global subscriber first; then there is nothing to
        // switch and set_verbose says so.
        if current().is_none() {
            assert!(!set_verbose(true));
            return;
        }
        assert_eq!(current(), Some(LevelFilter::INFO));
        assert!(!tracing::enabled!(tracing::Level::DEBUG));
        assert!(set_verbose(true));
        assert_eq!(current(), Some(LevelFilter::DEBUG));
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        assert!(set_verbose(false));
        assert!(!tracing::enabled!(tracing::Level::DEBUG));
        init(2);
        assert_eq!(current(), Some(LevelFilter::TRACE));
        init(0);
    }
}
