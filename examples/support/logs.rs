//! Logs for the examples: `tracing` events to stderr, filtered by `RUST_LOG` (default given
//! by each example).

/// Installs the subscriber; `default` applies when `RUST_LOG` is not set (such as `"info"`).
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
