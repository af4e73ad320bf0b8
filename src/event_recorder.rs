//! Publishing Events (events.k8s.io/v1): every Event a new object, nothing remembered.
//!
//! kube's `Recorder` folds every Event with the same reason on the same object into one
//! series, keeping the first Event's note: two Secrets of one guard deleted within six
//! minutes read as the first one deleted twice, and the second Secret's name is lost. It
//! also keeps each Event in memory for six minutes (about 1 MiB after 200 restores).
//! What happened to which Secret is what an SRE reads the Events for, so each gets its
//! own. The number of Events is bounded elsewhere: an incident is reported once per
//! unhealthy spell, and the restore-loop breaker stops a restore loop.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// An Event's name is its object's name, a dot and a 32-digit hex suffix; a name is at
/// most 253 characters.
const NAME_PREFIX_MAX: usize = 253 - 1 - 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What one Event says.
pub struct Note<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    pub action: &'a str,
    pub note: &'a str,
}

pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    /// Makes names unique within this process (two Events in one nanosecond).
    sequence: AtomicU64,
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: &str) -> Recorder {
        Recorder {
            client,
            controller: controller.into(),
            instance: instance.into(),
            sequence: AtomicU64::new(0),
        }
    }

    /// Create one Event about `regarding`, in its namespace.
    pub async fn publish(&self, note: &Note<'_>, regarding: &ObjectReference) -> kube::Result<()> {
        let event = self.event(note, regarding, Timestamp::now());
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
    }

    fn event(&self, note: &Note<'_>, regarding: &ObjectReference, now: Timestamp) -> Event {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        let prefix = truncate(object, NAME_PREFIX_MAX).trim_end_matches(['.', '-']);
        let nanos = now.as_nanosecond() as u64;
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}.{nanos:016x}{sequence:016x}")),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(note.type_.as_str().into()),
            reason: Some(note.reason.into()),
            action: Some(note.action.into()),
            note: Some(note.note.into()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::fixtures;

    fn regarding(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("SecretGuard".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn note(text: &str) -> Note<'_> {
        Note {
            type_: EventType::Warning,
            reason: "SecretDeleted",
            action: "Guard",
            note: text,
        }
    }

    #[tokio::test]
    async fn two_events_of_one_reason_on_one_object_are_two_objects_each_with_its_own_note() {
        let (ctx, _writers, _server) = fixtures::context();
        let recorder = Recorder::new(ctx.client.clone(), "secretguard", "pod-a");
        let now = Timestamp::now();
        let a = recorder.event(&note("Secret ns/a was deleted"), &regarding("g"), now);
        let b = recorder.event(&note("Secret ns/b was deleted"), &regarding("g"), now);
        assert_ne!(
            a.metadata.name, b.metadata.name,
            "the same instant, still two names"
        );
        assert_eq!(a.note.as_deref(), Some("Secret ns/a was deleted"));
        assert_eq!(b.note.as_deref(), Some("Secret ns/b was deleted"));
        assert_eq!(b.series, None);
        assert_eq!(b.reporting_instance.as_deref(), Some("pod-a"));
        assert_eq!(b.metadata.namespace.as_deref(), Some("ns"));
    }

    #[tokio::test]
    async fn an_event_about_an_object_with_the_longest_name_has_a_valid_name() {
        let (ctx, _writers, _server) = fixtures::context();
        let recorder = Recorder::new(ctx.client.clone(), "secretguard", "pod-a");
        let long = format!("{}.{}", "a".repeat(200), "b".repeat(52));
        let name = recorder
            .event(&note("x"), &regarding(&long), Timestamp::now())
            .metadata
            .name
            .unwrap();
        assert!(name.len() <= 253, "{} characters", name.len());
        assert!(name.starts_with(&"a".repeat(200)));
        assert!(!name.contains(".."), "no empty label: {name}");
    }
}
