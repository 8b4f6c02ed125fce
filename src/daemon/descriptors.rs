//! The open-file limit: every connection is a descriptor (two while a
//! download streams a file), so the soft limit is raised to the hard limit
//! once at start. How the descriptors are shared among the listeners is the
//! server's descriptor budget (`server::budget`), which reads the limit.

use tracing::warn;

/// The process's open-file limit after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFileLimit {
    /// The soft limit now in force (`None`: unlimited).
    pub soft: Option<u64>,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// The highest soft limit tried when the hard limit is "unlimited" (Linux's
/// default `fs.nr_open`).
const UNLIMITED_NOFILE: u64 = 1 << 20;

/// Raises the soft limit on open files to the hard limit: every connection
/// is a descriptor (two while a download streams a file), and the usual soft
/// default of 1024 is far below the default `max_connections`.
pub(crate) fn raise_open_file_limit() -> OpenFileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let target = before.maximum.unwrap_or(UNLIMITED_NOFILE);
    if before.current.is_some_and(|soft| soft < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!(error = %e, soft = ?before.current, "cannot raise the open-file limit");
        }
    }
    let now = getrlimit(Resource::Nofile);
    OpenFileLimit {
        soft: now.current,
        hard: now.maximum,
    }
}
