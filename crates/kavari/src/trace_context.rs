//! W3C trace context in record headers (feature `opentelemetry`): a
//! publish writes its span's context as `traceparent` (and `tracestate`),
//! and the span of a handler call for that record takes it as its parent,
//! so a trace runs from the publishing service through Kafka into the
//! handler, across processes and languages (the Java and Python
//! OpenTelemetry instrumentations use the same headers).
//!
//! The spans are `tracing` spans: the context is the OpenTelemetry one that
//! a `tracing-opentelemetry` layer gives them. Without such a layer (or
//! without the feature) nothing is written and nothing is read.

use std::collections::BTreeMap;

/// The trace-context headers of one publish; empty when there is no trace
/// (and always without the feature, where it holds nothing).
#[derive(Debug, Default)]
pub(crate) struct TraceHeaders {
    #[cfg(feature = "opentelemetry")]
    pairs: Vec<(String, String)>,
}

impl TraceHeaders {
    /// The context of `span`, or of the current span when `span` is
    /// disabled, as W3C trace-context headers.
    pub(crate) fn of(span: &tracing::Span) -> Self {
        #[cfg(feature = "opentelemetry")]
        {
            use opentelemetry::propagation::TextMapPropagator;
            use opentelemetry::trace::TraceContextExt;
            use tracing_opentelemetry::OpenTelemetrySpanExt;

            let cx = if span.is_disabled() {
                tracing::Span::current().context()
            } else {
                span.context()
            };
            /// Collects what the propagator writes.
            struct Pairs(Vec<(String, String)>);

            impl opentelemetry::propagation::Injector for Pairs {
                fn set(&mut self, key: &str, value: String) {
                    self.0.push((key.to_string(), value));
                }
            }

            let mut pairs = Pairs(Vec::new());
            if cx.span().span_context().is_valid() {
                opentelemetry_sdk::propagation::TraceContextPropagator::new()
                    .inject_context(&cx, &mut pairs);
            }
            // Records carry their headers sorted by name.
            pairs.0.sort();
            Self { pairs: pairs.0 }
        }
        #[cfg(not(feature = "opentelemetry"))]
        {
            let _ = span;
            Self {}
        }
    }

    /// Whether there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        #[cfg(feature = "opentelemetry")]
        return self.pairs.is_empty();
        #[cfg(not(feature = "opentelemetry"))]
        true
    }

    /// Each header's name and value.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        #[cfg(feature = "opentelemetry")]
        return self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
        #[cfg(not(feature = "opentelemetry"))]
        std::iter::empty()
    }

    /// Writes them into `headers` (replacing a context already there).
    pub(crate) fn write_into(&self, headers: &mut BTreeMap<String, Vec<u8>>) {
        for (k, v) in self.pairs() {
            headers.insert(k.to_string(), v.to_vec());
        }
    }
}

/// Makes the trace context in a record's `headers` the parent of `span`
/// (a handler call's), when there is one and it parses.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &BTreeMap<String, Vec<u8>>) {
    #[cfg(feature = "opentelemetry")]
    {
        use opentelemetry::propagation::{Extractor, TextMapPropagator};
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        /// A record's headers as the propagator reads them (UTF-8 only).
        struct Record<'a>(&'a BTreeMap<String, Vec<u8>>);

        impl Extractor for Record<'_> {
            fn get(&self, key: &str) -> Option<&str> {
                std::str::from_utf8(self.0.get(key)?).ok()
            }

            fn keys(&self) -> Vec<&str> {
                self.0.keys().map(String::as_str).collect()
            }
        }

        if span.is_disabled() || !headers.contains_key("traceparent") {
            return;
        }
        let cx =
            opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Record(headers));
        if cx.span().span_context().is_valid() {
            // Fails only when no OpenTelemetry layer sees the span.
            let _ = span.set_parent(cx);
        }
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, headers);
}
