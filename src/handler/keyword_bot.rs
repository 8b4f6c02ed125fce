//! `keyword-bot`: for each message, the first rule (in config order) with a
//! keyword contained in it, case-insensitively, replies; otherwise the
//! default reply. Replies are templates (`{time}`, `{peer}`, ...).

use prometheus::IntCounter;
use serde::Deserialize;

use super::chat::{self, Answer, Bot, Who};
use super::probe::{Probe, ProbeContext, Verdict, first_line, shown};
use super::template::{Template, TemplateContext, TimeFormat};
use super::{BuildContext, DatagramSource, Ended, Handler, HandlerError, Invalid};
use crate::conn::{Connection, Io};

/// Reply when no rule matches (the seed tutorial's).
const DEFAULT_REPLY: &str = "我不能明白您的意思,好尴尬啊...";

/// Settings of the keyword bot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordBotConfig {
    /// Rules, tried in order; the first with a keyword in the message replies.
    #[serde(default)]
    pub rules: Vec<KeywordRule>,
    /// Reply when no rule matches.
    #[serde(default = "default_reply")]
    pub default_reply: Template,
    /// Format of `{time}`.
    #[serde(default = "TimeFormat::seed_default")]
    pub time_format: TimeFormat,
    /// Sent when the server shuts down while the client is connected.
    #[serde(default = "chat::default_goodbye")]
    pub goodbye_reply: Template,
}

/// One keyword rule: any of `keywords` (case-insensitive substring) gives `reply`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordRule {
    /// Words that trigger the rule.
    pub keywords: Vec<String>,
    /// The reply template.
    pub reply: Template,
}

fn default_reply() -> Template {
    Template::literal(DEFAULT_REPLY)
}

/// The keyword bot.
#[derive(Debug)]
pub(crate) struct KeywordBot {
    rules: Rules,
    goodbye_reply: Template,
    time_format: TimeFormat,
    answered: IntCounter,
}

/// The rules in the form a message is matched against.
#[derive(Debug, Clone)]
struct Rules {
    /// Each rule's keywords (lowercased) and reply, in config order.
    rules: Vec<(Vec<String>, Template)>,
    default_reply: Template,
    /// Every keyword, for `{keywords}`.
    keywords: String,
}

impl Rules {
    fn new(config: &KeywordBotConfig) -> Self {
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                let keywords = rule.keywords.iter().map(|k| k.to_lowercase()).collect();
                (keywords, rule.reply.clone())
            })
            .collect();
        let keywords = config
            .rules
            .iter()
            .flat_map(|rule| rule.keywords.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ");
        Rules {
            rules,
            default_reply: config.default_reply.clone(),
            keywords,
        }
    }

    /// The reply template for a message.
    fn reply_for(&self, message: &str) -> &Template {
        let message = chat::lowercase(message);
        self.rules
            .iter()
            .find(|(keywords, _)| keywords.iter().any(|k| message.contains(k.as_str())))
            .map_or(&self.default_reply, |(_, reply)| reply)
    }
}

impl KeywordBot {
    fn context<'a>(&'a self, who: &'a Who<'_>) -> TemplateContext<'a> {
        TemplateContext {
            time_format: &self.time_format,
            peer: who.peer,
            listener: who.listener,
            keywords: &self.rules.keywords,
        }
    }
}

impl Bot for KeywordBot {
    async fn answer(&self, _message: &[u8], text: &str, who: &Who<'_>) -> Answer {
        Answer::Text(self.rules.reply_for(text.trim()).render(&self.context(who)))
    }

    fn goodbye(&self, who: &Who<'_>) -> String {
        self.goodbye_reply.render(&self.context(who))
    }
}

impl Handler for KeywordBot {
    const NAME: &'static str = "keyword-bot";
    type Config = KeywordBotConfig;

    fn validate(config: &mut KeywordBotConfig) -> Result<(), Invalid> {
        for (i, rule) in config.rules.iter().enumerate() {
            if rule.keywords.is_empty() || rule.keywords.iter().any(|k| k.trim().is_empty()) {
                return Err(Invalid::at(
                    format!("rules[{i}].keywords"),
                    "every rule needs at least one keyword, and no keyword may be empty",
                ));
            }
        }
        Ok(())
    }

    fn build(config: &KeywordBotConfig, ctx: &BuildContext<'_>, _previous: Option<&Self>) -> Self {
        KeywordBot {
            rules: Rules::new(config),
            goodbye_reply: config.goodbye_reply.clone(),
            time_format: config.time_format.clone(),
            answered: ctx.metrics.messages_answered(),
        }
    }

    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        chat::chat(self, conn, &self.answered).await
    }

    const DATAGRAMS: bool = true;

    async fn datagram(
        &self,
        datagram: &[u8],
        from: &DatagramSource<'_>,
        reply: &mut Vec<u8>,
    ) -> bool {
        chat::datagram(self, datagram, from, &self.answered, reply).await
    }

    /// A message with a random token must get the reply the rules give it
    /// (any time in `{time}`), and never the message itself.
    fn probe(config: &KeywordBotConfig, ctx: &ProbeContext<'_>) -> Probe {
        let message = format!("switchboard probe {}", ctx.token);
        let rules = Rules::new(config);
        let expected = rules.reply_for(&message).clone();
        let time_format = config.time_format.clone();
        let (encoding, peer, listener) = (ctx.encoding, ctx.peer, ctx.listener.to_owned());
        let mut send = encoding.encode(&message).into_owned();
        send.push(b'\n');
        Probe {
            send,
            check: Box::new(move |reply, closed| {
                let line = match first_line(reply, closed) {
                    Ok(Some(line)) => line,
                    Ok(None) => return Verdict::More,
                    Err(fail) => return fail,
                };
                let text = encoding.decode(line);
                let ctx = TemplateContext {
                    time_format: &time_format,
                    peer,
                    listener: &listener,
                    keywords: &rules.keywords,
                };
                if text == message {
                    Verdict::Fail(format!("sent the probe message {} back", shown(line)))
                } else if expected.matches(&ctx, &text) {
                    Verdict::Pass("answered")
                } else {
                    Verdict::Fail(format!(
                        "answered {} instead of {}",
                        shown(line),
                        shown(expected.render(&ctx).as_bytes())
                    ))
                }
            }),
        }
    }

    fn summary(config: &KeywordBotConfig) -> String {
        format!("rules={}", config.rules.len())
    }

    /// Without rules it answers every message with its default reply:
    /// valid, but rarely meant (a `[[listener.rules]]` table left out, or
    /// written under another listener).
    fn warnings(config: &KeywordBotConfig) -> Vec<String> {
        if !config.rules.is_empty() {
            return Vec::new();
        }
        vec![
            "a keyword-bot without rules answers every message with its default reply; \
             add a [[listener.rules]] table (keywords = [...], reply = \"...\") after this listener"
                .to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::handler::HandlerConfig;

    fn default_rules() -> (Rules, TimeFormat) {
        let config = Config::embedded_default().unwrap();
        match &config.listener("keyword-bot").unwrap().handler {
            HandlerConfig::KeywordBot(bot) => (Rules::new(bot), bot.time_format.clone()),
            other => panic!("keyword-bot listener has handler {other:?}"),
        }
    }

    fn render(rules: &(Rules, TimeFormat), message: &str) -> String {
        rules.0.reply_for(message).render(&TemplateContext {
            time_format: &rules.1,
            peer: "127.0.0.1:9".parse().unwrap(),
            listener: "keyword-bot",
            keywords: &rules.0.keywords,
        })
    }

    #[test]
    fn seed_rules_in_order_case_insensitive() {
        let bot = default_rules();
        assert_eq!(render(&bot, "你好啊"), "你好");
        assert_eq!(render(&bot, "HeLLo there"), "你好");
        assert_eq!(render(&bot, "what is your NAME"), "我是python29号");
        // First rule in config order wins: "hello" comes before "time".
        assert_eq!(render(&bot, "hello, what time is it"), "你好");
        assert!(render(&bot, "时间").starts_with("当前时间是:"));
        assert_eq!(render(&bot, "???"), "我不能明白您的意思,好尴尬啊...");
        assert!(render(&bot, "help").contains("你好, hello, 名字, name"));
    }
}
