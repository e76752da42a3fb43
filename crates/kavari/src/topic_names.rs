//! [`TopicNames`]: where a message type's topic really is. The derive fixes
//! a type's topic at compile time; a manager may rename it per type and put
//! a prefix in front of every topic (`staging.orders`, a test's own
//! topics), for publishing, subscribing and dead letters alike.

use std::any::TypeId;
use std::borrow::Cow;
use std::collections::HashMap;

use crate::message::KafkaMessage;

/// The longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// A manager's topic mapping: the identity unless configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicNames {
    prefix: String,
    /// Per message type: the topic replacing `M::TOPIC` (before the prefix).
    renames: HashMap<TypeId, (&'static str, String)>,
}

impl TopicNames {
    pub(crate) fn set_prefix(&mut self, prefix: String) {
        self.prefix = prefix;
    }

    pub(crate) fn rename<M: KafkaMessage>(&mut self, topic: String) {
        self.renames
            .insert(TypeId::of::<M>(), (std::any::type_name::<M>(), topic));
    }

    /// `M`'s topic: borrowed (allocating nothing) unless a mapping is set.
    pub(crate) fn topic_of<M: KafkaMessage>(&self) -> Cow<'static, str> {
        if self.prefix.is_empty() && self.renames.is_empty() {
            return Cow::Borrowed(M::TOPIC);
        }
        let base = self
            .renames
            .get(&TypeId::of::<M>())
            .map_or(M::TOPIC, |(_, t)| t.as_str());
        if self.prefix.is_empty() {
            return Cow::Owned(base.to_string());
        }
        Cow::Owned(format!("{}{base}", self.prefix))
    }

    /// Checks the prefix and every renamed topic against Kafka's rule for
    /// topic names; the error says which breaks it.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.prefix.is_empty() && !legal_chars(&self.prefix) {
            return Err(format!(
                "topic prefix {:?} may hold only [a-zA-Z0-9._-]",
                self.prefix
            ));
        }
        for (rust_type, topic) in self.renames.values() {
            let full = format!("{}{topic}", self.prefix);
            if !valid_topic(&full) {
                return Err(format!(
                    "topic {full:?} for {rust_type} is not a Kafka topic name: 1 to {MAX_TOPIC_LEN} characters of [a-zA-Z0-9._-], not \".\" or \"..\""
                ));
            }
        }
        Ok(())
    }
}

fn legal_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Kafka's rule for topic names (the derive checks `topic = "..."` by the
/// same rule at compile time).
fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOPIC_LEN && t != "." && t != ".." && legal_chars(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "orders")]
    struct Placed;

    #[derive(serde::Serialize, serde::Deserialize, crate::KafkaMessage)]
    #[kavari(topic = "orders")]
    struct Cancelled;

    #[test]
    fn unmapped_topics_are_borrowed() {
        let names = TopicNames::default();
        assert!(matches!(
            names.topic_of::<Placed>(),
            Cow::Borrowed("orders")
        ));
    }

    #[test]
    fn the_prefix_goes_in_front_of_every_topic_renamed_or_not() {
        let mut names = TopicNames::default();
        names.set_prefix("staging.".into());
        names.rename::<Cancelled>("cancellations".into());
        assert_eq!(names.topic_of::<Placed>(), "staging.orders");
        assert_eq!(names.topic_of::<Cancelled>(), "staging.cancellations");
        assert_eq!(names.validate(), Ok(()));
        names.set_prefix(String::new());
        assert_eq!(names.topic_of::<Cancelled>(), "cancellations");
        assert_eq!(names.topic_of::<Placed>(), "orders");
    }

    #[test]
    fn illegal_names_are_refused_naming_the_type() {
        let mut names = TopicNames::default();
        names.set_prefix("a b".into());
        assert!(names.validate().is_err());
        let mut names = TopicNames::default();
        names.rename::<Placed>("..".into());
        let e = names.validate().unwrap_err();
        assert!(e.contains("Placed"), "{e}");
        names.rename::<Placed>("x".repeat(250));
        assert!(names.validate().is_err());
    }
}
