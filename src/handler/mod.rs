//! The handlers, and the one seam between a connection and what a listener
//! does with it: the [`Handler`] trait. This file only dispatches.
//!
//! Adding a handler: one file here whose type implements [`Handler`]
//! (its settings, their validation, building it, serving a connection, its
//! probe, its descriptor cost and its summary), and one line in the
//! `handlers!` list at the bottom.

mod chat;
mod download;
mod echo;
mod keyword_bot;
mod metrics;
mod outcome;
pub(crate) mod probe;
mod random_bot;
pub(crate) mod template;

use std::fmt;
use std::future::Future;

use serde::Deserializer;
use serde::de::DeserializeOwned;

pub use download::DownloadConfig;
pub use echo::EchoConfig;
pub use keyword_bot::{KeywordBotConfig, KeywordRule};
pub use metrics::MetricsConfig;
pub(crate) use outcome::{Ended, HandlerError, Refusal};
pub use random_bot::RandomBotConfig;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use download::http as download_http_for_fuzzing;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use download::resolve_for_fuzzing;
#[cfg(any(test, feature = "fuzzing"))]
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use template::template_for_fuzzing;

use crate::conn::{Connection, Io, Settings};
use crate::history::{Histories, HistoryConfig};
use crate::metrics::ListenerMetrics;
use probe::{Probe, ProbeContext};

/// What one kind of handler is: everything about it, behind one seam.
pub(crate) trait Handler: Sized + Send + Sync + 'static {
    /// Its name in `handler = "..."`.
    const NAME: &'static str;

    /// Its own keys of a `[[listener]]` table (serde, `deny_unknown_fields`).
    type Config: DeserializeOwned + Clone + PartialEq + fmt::Debug + Send + Sync + 'static;

    /// Checks what serde cannot, and resolves what must be resolved once
    /// (a download root becomes absolute). Runs when the config is loaded.
    fn validate(_config: &mut Self::Config) -> Result<(), Invalid> {
        Ok(())
    }

    /// The handler for a listener's connections; on a reload, `previous` is
    /// the one it replaces, whose state (a history) it may take over.
    fn build(config: &Self::Config, ctx: &BuildContext<'_>, previous: Option<&Self>) -> Self;

    /// Talks to the client until the conversation ends. Errors that the
    /// client caused are answered by the caller (see
    /// [`HandlerError::client_reply`]).
    fn serve<S: Io>(
        &self,
        conn: &mut Connection<S>,
    ) -> impl Future<Output = Result<Ended, HandlerError>> + Send;

    /// What `switchboard probe` sends, and how it tells this handler's
    /// answer from another handler's.
    fn probe(config: &Self::Config, ctx: &ProbeContext<'_>) -> Probe;

    /// The history it keeps (a random-bot's), which the server opens
    /// before building it: `None` for the handlers that keep none.
    fn history(_config: &Self::Config) -> Option<&HistoryConfig> {
        None
    }

    /// True when it can serve a UDP listener (see [`Handler::datagram`]).
    const DATAGRAMS: bool = false;

    /// The reply to one datagram, sent back to its sender: written into
    /// `reply` (empty, and reused from datagram to datagram, so that a
    /// reply costs no allocation), true when there is one. Called only
    /// when [`Handler::DATAGRAMS`] is true.
    fn datagram(
        &self,
        datagram: &[u8],
        from: &DatagramSource<'_>,
        reply: &mut Vec<u8>,
    ) -> impl Future<Output = bool> + Send {
        let _ = (datagram, from, reply);
        std::future::ready(false)
    }

    /// True when its reply to a datagram may wait (for a history on disk
    /// or across the network); false when [`Handler::datagram`] is always
    /// ready at its first poll, which lets the receive loop answer from
    /// its own buffer, with no copy of the datagram and no task.
    fn datagram_waits(&self) -> bool {
        false
    }

    /// Descriptors one connection may hold at once (the socket, plus a file).
    fn descriptors_per_connection(_config: &Self::Config) -> u64 {
        1
    }

    /// Its settings in one line, for `check` (empty when it has none).
    fn summary(config: &Self::Config) -> String;

    /// What is valid in its settings but likely not what was meant (a
    /// keyword-bot without rules), one message each, about its listener:
    /// `check` prints them, the daemon logs them at start and on a reload.
    fn warnings(_config: &Self::Config) -> Vec<String> {
        Vec::new()
    }
}

/// What building a handler may use besides its own settings.
pub(crate) struct BuildContext<'a> {
    /// The connection settings of its listener.
    pub settings: &'a Settings,
    /// Its listener's counters (and through them the server's registry).
    pub metrics: &'a ListenerMetrics,
    /// The histories opened for the config it is built from.
    pub histories: &'a Histories,
}

/// Where a datagram came from, and the listener it came to.
pub(crate) struct DatagramSource<'a> {
    /// Its sender, where the reply goes (`{peer}`).
    pub peer: std::net::SocketAddr,
    /// The listener's settings (its name, its encoding).
    pub settings: &'a Settings,
    /// The listener's counters.
    pub metrics: &'a ListenerMetrics,
}

/// A handler setting that is not valid: the key (relative to the listener
/// table, such as `root` or `rules[1].keywords`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// The key, relative to the listener's table.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Invalid {
    /// A mistake in `key`.
    pub(crate) fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Generates the dispatch from one line per handler, `Variant(ItsConfig) =>
/// module::Type`: the config enum, the running-handler enum, the names, and
/// a `match` per seam method. (`ItsConfig` must be `Type`'s
/// `Handler::Config`; the dispatch does not compile otherwise.)
macro_rules! handlers {
    ($($variant:ident($config:ident) => $module:ident::$handler:ident),+ $(,)?) => {
        /// The handler of a listener, with its own settings.
        #[derive(Debug, Clone, PartialEq)]
        pub enum HandlerConfig {
            $(
                #[doc = concat!("The ", stringify!($variant), " handler, with its settings.")]
                $variant($config),
            )+
        }

        /// A built handler, serving a listener's connections.
        #[derive(Debug)]
        pub(crate) enum AnyHandler {
            $( $variant($module::$handler), )+
        }

        /// Every handler's name, as written in `handler = "..."`.
        pub(crate) const HANDLER_NAMES: &[&str] = &[$( <$module::$handler as Handler>::NAME, )+];

        /// The names of the handlers that serve UDP listeners.
        pub(crate) fn datagram_handlers() -> Vec<&'static str> {
            let mut names = Vec::new();
            $(
                if <$module::$handler as Handler>::DATAGRAMS {
                    names.push(<$module::$handler as Handler>::NAME);
                }
            )+
            names
        }

        impl HandlerConfig {
            /// True when this handler can serve a UDP listener.
            pub(crate) fn serves_datagrams(&self) -> bool {
                match self {
                    $( HandlerConfig::$variant(_) => <$module::$handler as Handler>::DATAGRAMS, )+
                }
            }

            /// Deserializes the settings of the handler called `name`
            /// (`None`: there is no such handler).
            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
                name: &str,
                settings: D,
            ) -> Option<Result<HandlerConfig, D::Error>> {
                $(
                    if name == <$module::$handler as Handler>::NAME {
                        return Some(
                            <$config as serde::Deserialize>::deserialize(settings)
                                .map(HandlerConfig::$variant),
                        );
                    }
                )+
                None
            }

            /// The keys of the settings of the handler called `name`.
            pub(crate) fn keys(name: &str) -> &'static [&'static str] {
                $(
                    if name == <$module::$handler as Handler>::NAME {
                        return crate::struct_keys::struct_keys::<$config>();
                    }
                )+
                &[]
            }

            /// The handler's name, as written in `handler = "..."`.
            pub fn name(&self) -> &'static str {
                match self {
                    $( HandlerConfig::$variant(_) => <$module::$handler as Handler>::NAME, )+
                }
            }

            /// See [`Handler::validate`].
            pub(crate) fn validate(&mut self) -> Result<(), Invalid> {
                match self {
                    $( HandlerConfig::$variant(c) => $module::$handler::validate(c), )+
                }
            }

            /// The handler's settings in one line (see [`Handler::summary`]).
            pub fn summary(&self) -> String {
                match self {
                    $( HandlerConfig::$variant(c) => $module::$handler::summary(c), )+
                }
            }

            /// See [`Handler::warnings`].
            pub(crate) fn warnings(&self) -> Vec<String> {
                match self {
                    $( HandlerConfig::$variant(c) => $module::$handler::warnings(c), )+
                }
            }

            /// See [`Handler::history`].
            pub(crate) fn history(&self) -> Option<&HistoryConfig> {
                match self {
                    $( HandlerConfig::$variant(c) => $module::$handler::history(c), )+
                }
            }

            /// See [`Handler::descriptors_per_connection`].
            pub fn descriptors_per_connection(&self) -> u64 {
                match self {
                    $( HandlerConfig::$variant(c) => $module::$handler::descriptors_per_connection(c), )+
                }
            }

            /// See [`Handler::probe`].
            pub(crate) fn probe(&self, ctx: &ProbeContext<'_>) -> Probe {
                match self {
                    $( HandlerConfig::$variant(c) => $module::$handler::probe(c, ctx), )+
                }
            }
        }

        impl AnyHandler {
            /// Builds the handler `config` names; see [`Handler::build`].
            pub(crate) fn build(
                config: &HandlerConfig,
                ctx: &BuildContext<'_>,
                previous: Option<&AnyHandler>,
            ) -> AnyHandler {
                match (config, previous) {
                    $(
                        (HandlerConfig::$variant(c), Some(AnyHandler::$variant(p))) => {
                            AnyHandler::$variant($module::$handler::build(c, ctx, Some(p)))
                        }
                        (HandlerConfig::$variant(c), _) => {
                            AnyHandler::$variant($module::$handler::build(c, ctx, None))
                        }
                    )+
                }
            }

            /// Answers one datagram; see [`Handler::datagram`].
            pub(crate) async fn datagram(
                &self,
                datagram: &[u8],
                from: &DatagramSource<'_>,
                reply: &mut Vec<u8>,
            ) -> bool {
                match self {
                    $( AnyHandler::$variant(h) => h.datagram(datagram, from, reply).await, )+
                }
            }

            /// See [`Handler::datagram_waits`].
            pub(crate) fn datagram_waits(&self) -> bool {
                match self {
                    $( AnyHandler::$variant(h) => h.datagram_waits(), )+
                }
            }

            /// Serves one connection; see [`Handler::serve`]. Each handler's
            /// future is boxed: inline, every connection's task would be as
            /// large as the largest handler's state (an idle echo
            /// connection paying for HTTP's), and an idle connection's
            /// memory is mostly its task.
            pub(crate) async fn serve<S: Io>(
                &self,
                conn: &mut Connection<S>,
            ) -> Result<Ended, HandlerError> {
                match self {
                    $( AnyHandler::$variant(h) => Box::pin(h.serve(conn)).await, )+
                }
            }
        }
    };
}

handlers! {
    Echo(EchoConfig) => echo::Echo,
    Download(DownloadConfig) => download::Download,
    KeywordBot(KeywordBotConfig) => keyword_bot::KeywordBot,
    RandomBot(RandomBotConfig) => random_bot::RandomBot,
    Metrics(MetricsConfig) => metrics::MetricsHandler,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::test_connection;

    /// The dispatch boxes each handler's future, so that a connection's task
    /// holds only its own handler's state (an idle echo connection used to
    /// carry room for an HTTP request's, 2.5 KB more); and echo's own
    /// state stays small, as every idle echo connection pays it.
    #[test]
    fn a_connection_carries_only_its_own_handler_s_state() {
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = test_connection(server);
        let echo = AnyHandler::Echo(echo::Echo);
        let dispatch = std::mem::size_of_val(&echo.serve(&mut conn));
        let own = std::mem::size_of_val(&echo::Echo.serve(&mut conn));
        eprintln!("dispatch {dispatch} bytes, echo {own} bytes");
        assert!(dispatch <= 128, "the dispatch's future is {dispatch} bytes");
        assert!(own <= 256, "echo's future is {own} bytes");
    }

    /// An HTTP keep-alive connection waits for its next request in a
    /// small future: the head's read and the response (most of the state)
    /// are boxed for a request's life, so an idle connection holds none of
    /// it (it was 2.2 KB in every idle keep-alive connection).
    #[test]
    fn an_idle_keep_alive_connection_carries_no_request_s_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = format!(
            "[[listener]]\nname = \"d\"\nbind = \"127.0.0.1:0\"\nhandler = \"download\"\nroot = {:?}\n",
            dir.path().display().to_string()
        );
        let config = crate::config::Config::from_toml(&toml, "t.toml").expect("config");
        let listener = &config.listeners[0];
        let settings = listener.connection_settings();
        let metrics = ListenerMetrics::detached();
        let histories = Histories::default();
        let ctx = BuildContext {
            settings: &settings,
            metrics: &metrics,
            histories: &histories,
        };
        let AnyHandler::Download(download) = AnyHandler::build(&listener.handler, &ctx, None)
        else {
            panic!("not a download handler");
        };
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = test_connection(server);
        let own = std::mem::size_of_val(&download.serve(&mut conn));
        eprintln!("download {own} bytes");
        // 272 B: the first message's read is boxed once its first byte is
        // in (it was 456 B with it), and the keep-alive loop does not keep
        // the first line; 24 B of it since the last body's unread tail (a
        // pointer, and the wait's wake-up for a look at it).
        assert!(own <= 272, "download's future is {own} bytes");
    }
}
