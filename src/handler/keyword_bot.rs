//! `keyword-bot`: for each message, the first rule (in config order) with a
//! keyword contained in it, case-insensitively, replies; otherwise the
//! default reply. Replies are templates (`{time}`, `{peer}`, ...).

use tracing::trace;

use super::{Ended, Handler, HandlerError, Io};
use crate::config::KeywordBotConfig;
use crate::connection::{Connection, Incoming};
use crate::template::{Template, TemplateContext, TimeFormat};

/// The keyword bot.
#[derive(Debug, Clone)]
pub struct KeywordBot {
    /// Each rule's keywords (lowercased) and reply, in config order.
    rules: Vec<(Vec<String>, Template)>,
    default_reply: Template,
    goodbye_reply: Template,
    time_format: TimeFormat,
    /// Every keyword, for `{keywords}`.
    keywords: String,
}

impl KeywordBot {
    /// A bot with the configured rules.
    pub fn new(config: &KeywordBotConfig) -> Self {
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                (
                    rule.keywords.iter().map(|k| k.to_lowercase()).collect(),
                    rule.reply.clone(),
                )
            })
            .collect();
        let keywords = config
            .rules
            .iter()
            .flat_map(|rule| rule.keywords.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ");
        KeywordBot {
            rules,
            default_reply: config.default_reply.clone(),
            goodbye_reply: config.goodbye_reply.clone(),
            time_format: config.time_format.clone(),
            keywords,
        }
    }

    /// The reply template for a message.
    pub fn reply_for(&self, message: &str) -> &Template {
        let message = message.to_lowercase();
        self.rules
            .iter()
            .find(|(keywords, _)| keywords.iter().any(|k| message.contains(k.as_str())))
            .map_or(&self.default_reply, |(_, reply)| reply)
    }

    fn render<S>(&self, template: &Template, conn: &Connection<S>) -> String {
        template.render(&TemplateContext {
            time_format: &self.time_format,
            peer: conn.peer,
            listener: &conn.settings.listener,
            keywords: &self.keywords,
        })
    }
}

impl Handler for KeywordBot {
    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        let mut reader = conn.message_reader();
        loop {
            match conn.next_message(&mut reader).await? {
                Incoming::Message(bytes) => {
                    let text = conn.settings.encoding.decode(&bytes);
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    trace!(message = %text, "received");
                    let reply = self.render(self.reply_for(text), conn);
                    conn.send_line(&reply).await?;
                }
                Incoming::Closed => return Ok(Ended::ClientClosed),
                Incoming::Shutdown => {
                    let goodbye = self.render(&self.goodbye_reply, conn);
                    conn.send_line(&goodbye).await?;
                    return Ok(Ended::Shutdown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HandlerConfig};

    fn default_bot() -> KeywordBot {
        let config = Config::embedded_default().unwrap();
        match &config.listener("keyword-bot").unwrap().handler {
            HandlerConfig::KeywordBot(bot) => KeywordBot::new(bot),
            other => panic!("keyword-bot listener has handler {other:?}"),
        }
    }

    fn render(bot: &KeywordBot, message: &str) -> String {
        bot.reply_for(message).render(&TemplateContext {
            time_format: &bot.time_format,
            peer: "127.0.0.1:9".parse().unwrap(),
            listener: "keyword-bot",
            keywords: &bot.keywords,
        })
    }

    #[test]
    fn seed_rules_in_order_case_insensitive() {
        let bot = default_bot();
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
