//! What rgunicorn's dependencies report, into the error log at
//! `loglevel = debug`: h2 through `tracing`, rustls and tungstenite
//! through the `log` facade. hyper 1.x emits events only when built with
//! `--cfg hyper_unstable_tracing`, which rgunicorn does not use, so hyper
//! says nothing here.
//!
//! Both are installed once in the master, before the first fork, and write
//! synchronously through [`super::log`]: no thread of their own, so nothing
//! crosses a fork half-done. The level is read on each event, so a HUP
//! that changes `loglevel` takes effect.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Level;

/// Events pass only at `loglevel = debug`.
static ON: AtomicBool = AtomicBool::new(false);

/// Install the `tracing` subscriber and the `log` logger (once; later calls
/// only set whether they pass events on).
pub fn install(debug: bool) {
    ON.store(debug, Ordering::Release);
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Events);
        let _ = log::set_logger(&Records);
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn level_of_tracing(l: &tracing::Level) -> Option<Level> {
    match *l {
        tracing::Level::ERROR => Some(Level::Error),
        tracing::Level::WARN => Some(Level::Warning),
        tracing::Level::INFO => Some(Level::Info),
        tracing::Level::DEBUG => Some(Level::Debug),
        tracing::Level::TRACE => None,
    }
}

fn level_of_log(l: log::Level) -> Option<Level> {
    match l {
        log::Level::Error => Some(Level::Error),
        log::Level::Warn => Some(Level::Warning),
        log::Level::Info => Some(Level::Info),
        log::Level::Debug => Some(Level::Debug),
        log::Level::Trace => None,
    }
}

/// The `tracing` subscriber: events only, spans are not kept.
struct Events;

impl tracing::Subscriber for Events {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        ON.load(Ordering::Acquire) && level_of_tracing(metadata.level()).is_some()
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let Some(level) = level_of_tracing(event.metadata().level()) else {
            return;
        };
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        super::log(
            level,
            &format!("{}:{}", event.metadata().target(), fields.0),
        );
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// An event's fields as `message key=value ...`.
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// The `log` facade's logger.
struct Records;

impl log::Log for Records {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        ON.load(Ordering::Acquire) && level_of_log(metadata.level()).is_some()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(level) = level_of_log(record.level()) {
            super::log(level, &format!("{}: {}", record.target(), record.args()));
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::field::Visit;

    static CALLSITE: tracing::callsite::DefaultCallsite =
        tracing::callsite::DefaultCallsite::new(&META);
    static META: tracing::Metadata<'static> = tracing::Metadata::new(
        "probe",
        "deps_test",
        tracing::Level::INFO,
        None,
        None,
        None,
        tracing::field::FieldSet::new(
            &["message", "stream"],
            tracing::callsite::Identifier(&CALLSITE),
        ),
        tracing::metadata::Kind::EVENT,
    );

    #[test]
    fn fields_read_as_message_then_pairs() {
        let mut f = Fields(String::new());
        let fields = META.fields();
        f.record_debug(&fields.field("message").unwrap(), &format_args!("reset"));
        f.record_debug(&fields.field("stream").unwrap(), &3);
        assert_eq!(f.0, " reset stream=3");
    }

    #[test]
    fn trace_level_is_never_passed_on() {
        assert_eq!(level_of_tracing(&tracing::Level::TRACE), None);
        assert_eq!(level_of_log(log::Level::Trace), None);
        assert_eq!(level_of_log(log::Level::Warn), Some(Level::Warning));
    }
}
