//! The descriptor budget: every connection is a descriptor (two while a
//! download streams a file), so the soft open-file limit is raised to the
//! hard limit once at start, and each config is checked against it.

use tracing::warn;

use crate::config::Config;

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

/// Descriptors the configured listeners may need at once: one per connection,
/// one more per download (the file), one per listening socket, plus a margin
/// for the runtime and logs.
pub(crate) fn descriptors_needed(config: &Config) -> u64 {
    let per_listener = config
        .listeners
        .iter()
        .map(|l| l.max_connections as u64 * l.handler.descriptors_per_connection() + 1);
    per_listener.sum::<u64>() + 64
}

/// The open-file limit, raised once at start, against what configs need.
#[derive(Debug)]
pub(crate) struct DescriptorBudget {
    /// The soft limit after raising it (`None`: unlimited).
    limit: Option<u64>,
    /// The most any config checked so far may need.
    needed: u64,
}

impl DescriptorBudget {
    /// Raises the soft limit to the hard one, then checks `config`.
    pub(crate) fn raise_for(config: &Config) -> Self {
        let mut budget = DescriptorBudget {
            limit: raise_open_file_limit().soft,
            needed: 0,
        };
        budget.check(config);
        budget
    }

    /// Warns when `config`'s `max_connections` could need more descriptors
    /// than the limit allows, unless an earlier config already needed as
    /// many (and was warned about).
    pub(crate) fn check(&mut self, config: &Config) {
        let needed = descriptors_needed(config);
        if needed <= self.needed {
            return;
        }
        self.needed = needed;
        if self.limit.is_some_and(|limit| limit < needed) {
            warn!(
                limit = ?self.limit,
                needed,
                "the open-file limit is below what max_connections allows; \
                 beyond it new clients wait until descriptors free (raise LimitNOFILE / ulimit -n)"
            );
        }
    }
}
