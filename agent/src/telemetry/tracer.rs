//! Span fields → the SDK's exportable [`SpanData`], without the SDK's tracer.
//!
//! The SDK's tracer builds a `SpanBuilder`, a `Context`, a live `Span` and then the `SpanData` for
//! each span; Sonde's spans are finished when they are made, so [`SpanMaker`] goes straight to the
//! `SpanData` with the same decisions the tracer takes (`opentelemetry_sdk` 0.33,
//! `trace/tracer.rs`): the trace id of a valid parent (an incoming `traceparent`) or a new one,
//! the sampler's decision (only sampled spans are exported: a batch span processor ignores the
//! others), the sampler's extra attributes and trace state, and the attribute count limit.
//! Sampler, id generator and limits come from the SDK's `Config::default()`, which reads
//! `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` and `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`.

use opentelemetry::{
    trace::{SpanContext, SpanId, TraceContextExt as _},
    Context, InstrumentationScope,
};
use opentelemetry_sdk::trace::{
    Config, IdGenerator, SamplingDecision, ShouldSample, SpanData, SpanEvents, SpanLinks,
};

use super::{semconv, span::SpanFields};

/// Makes the `SpanData` of finished spans. See the module docs.
#[derive(Debug)]
pub struct SpanMaker {
    sampler: Box<dyn ShouldSample>,
    ids: Box<dyn IdGenerator>,
    max_attributes: usize,
    scope: InstrumentationScope,
}

impl Default for SpanMaker {
    /// Configured from the environment, as the SDK's tracer provider is.
    fn default() -> Self {
        let config = Config::default();
        Self {
            sampler: config.sampler,
            ids: config.id_generator,
            max_attributes: config.span_limits.max_attributes_per_span as usize,
            scope: InstrumentationScope::builder(semconv::SCOPE_NAME).build(),
        }
    }
}

impl SpanMaker {
    /// The exportable span of `fields`, or `None` when the sampler does not sample it.
    pub fn make(&self, fields: SpanFields) -> Option<SpanData> {
        let parent = fields.parent.filter(SpanContext::is_valid);
        let parent_cx = match &parent {
            Some(sc) => Context::new().with_remote_span_context(sc.clone()),
            None => Context::new(),
        };
        let trace_id = parent
            .as_ref()
            .map_or_else(|| self.ids.new_trace_id(), SpanContext::trace_id);
        let sampling = self.sampler.should_sample(
            Some(&parent_cx),
            trace_id,
            &fields.name,
            &fields.kind,
            &fields.attributes,
            &[],
        );
        if sampling.decision != SamplingDecision::RecordAndSample {
            return None;
        }
        let mut attributes = fields.attributes;
        attributes.extend(sampling.attributes);
        let dropped = attributes.len().saturating_sub(self.max_attributes);
        attributes.truncate(self.max_attributes);
        let flags = parent
            .as_ref()
            .map(SpanContext::trace_flags)
            .unwrap_or_default()
            .with_sampled(true);
        Some(SpanData {
            span_context: SpanContext::new(
                trace_id,
                self.ids.new_span_id(),
                flags,
                false,
                sampling.trace_state,
            ),
            parent_span_id: parent
                .as_ref()
                .map_or(SpanId::INVALID, SpanContext::span_id),
            parent_span_is_remote: parent.as_ref().is_some_and(SpanContext::is_remote),
            span_kind: fields.kind,
            name: fields.name,
            start_time: fields.start,
            end_time: fields.end,
            attributes,
            dropped_attributes_count: u32::try_from(dropped).unwrap_or(u32::MAX),
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: fields.status,
            instrumentation_scope: self.scope.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use opentelemetry::{
        trace::{SpanKind, Status, TraceFlags, TraceId, TraceState},
        KeyValue,
    };
    use opentelemetry_sdk::trace::Sampler;

    use super::*;

    fn fields(parent: Option<SpanContext>) -> SpanFields {
        SpanFields {
            name: "GET /users/{id}".into(),
            kind: SpanKind::Server,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            end: SystemTime::UNIX_EPOCH + Duration::from_secs(2),
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 200),
            ],
            status: Status::Unset,
            parent,
        }
    }

    fn maker(sampler: Sampler, max_attributes: usize) -> SpanMaker {
        SpanMaker {
            sampler: Box::new(sampler),
            max_attributes,
            ..SpanMaker::default()
        }
    }

    #[test]
    fn a_root_span_gets_new_ids_and_the_fields() {
        let s = maker(Sampler::AlwaysOn, 128).make(fields(None)).unwrap();
        assert!(s.span_context.is_valid());
        assert!(s.span_context.is_sampled());
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert!(!s.parent_span_is_remote);
        assert_eq!(s.name, "GET /users/{id}");
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(s.attributes.len(), 2);
        assert_eq!(s.dropped_attributes_count, 0);
        assert_eq!(s.instrumentation_scope.name(), "sonde");
        let other = maker(Sampler::AlwaysOn, 128).make(fields(None)).unwrap();
        assert_ne!(s.span_context.trace_id(), other.span_context.trace_id());
    }

    #[test]
    fn a_remote_parent_gives_its_trace_and_its_sampling_decision() {
        let parent = SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c),
            SpanId::from(0xb7ad6b7169203331),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let parent_based = Sampler::ParentBased(Box::new(Sampler::AlwaysOff));
        let s = maker(parent_based.clone(), 128)
            .make(fields(Some(parent.clone())))
            .unwrap();
        assert_eq!(s.span_context.trace_id(), parent.trace_id());
        assert_eq!(s.parent_span_id, parent.span_id());
        assert!(s.parent_span_is_remote);
        assert_ne!(s.span_context.span_id(), parent.span_id());
        // An unsampled caller: not exported.
        let unsampled = SpanContext::new(
            parent.trace_id(),
            parent.span_id(),
            TraceFlags::default(),
            true,
            TraceState::default(),
        );
        assert!(maker(parent_based, 128)
            .make(fields(Some(unsampled)))
            .is_none());
    }

    #[test]
    fn sampling_and_the_attribute_limit_apply() {
        assert!(maker(Sampler::AlwaysOff, 128).make(fields(None)).is_none());
        assert!(maker(Sampler::TraceIdRatioBased(0.0), 128)
            .make(fields(None))
            .is_none());
        let s = maker(Sampler::AlwaysOn, 1).make(fields(None)).unwrap();
        assert_eq!(s.attributes.len(), 1);
        assert_eq!(s.dropped_attributes_count, 1);
    }
}
