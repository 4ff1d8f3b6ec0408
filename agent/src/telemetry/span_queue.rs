//! Accounting around the SDK's batch span processor, so that no span is lost uncounted.
//!
//! The SDK's `BatchSpanProcessor` drops a span when its queue is full and only logs the total at
//! shutdown. Sonde bounds the queue itself, one step earlier: [`Bounded`] admits a sampled span
//! only while fewer than `max_queue` of its process's spans are queued or being exported, and
//! counts the rest as `sonde.spans{outcome="dropped"}`. [`Counting`] releases the slots when an
//! export ends (delivered, refused, timed out or cancelled) and counts the outcome. The SDK's own
//! channel has room for `max_queue` spans plus its control messages (the resource, flushes), so it
//! never refuses a span: it never holds more than the spans admitted and not yet batched.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    runtime,
    trace::{
        span_processor_with_async_runtime::BatchSpanProcessor, BatchConfigBuilder, Span, SpanData,
        SpanExporter, SpanProcessor,
    },
    Resource,
};

use super::self_telemetry::ExportCounters;

/// Room in each batch processor's channel for its control messages (the resource set at build,
/// a flush, the shutdown) besides the spans [`QueueBound`] admits, so that the channel itself never
/// refuses a span.
const CONTROL_MESSAGES: usize = 4;

/// The span processor [`processor`] makes.
pub(crate) type SpanQueue = Bounded<BatchSpanProcessor<runtime::Tokio>>;

/// One process's span processor: the SDK's batch processor (a tokio task, batch settings from
/// `OTEL_BSP_*`) exporting to `exporter`, behind a bound of `max_queue` spans whose drops and
/// export outcomes are counted in `counters`.
pub(crate) fn processor<E: SpanExporter + 'static>(
    exporter: E,
    max_queue: usize,
    counters: &Arc<ExportCounters>,
) -> SpanQueue {
    let bound = QueueBound::new(max_queue, Arc::clone(counters));
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(max_queue + CONTROL_MESSAGES)
        .build();
    let exporter = Counting {
        inner: exporter,
        bound: Arc::clone(&bound),
    };
    Bounded {
        inner: BatchSpanProcessor::builder(exporter, runtime::Tokio)
            .with_batch_config(config)
            .build(),
        bound,
    }
}

/// Spans of one process admitted to its batch processor and not yet exported.
#[derive(Debug)]
struct QueueBound {
    queued: AtomicUsize,
    max: usize,
    counters: Arc<ExportCounters>,
}

impl QueueBound {
    /// A bound of `max` spans (the batch processor's `max_queue_size`).
    fn new(max: usize, counters: Arc<ExportCounters>) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicUsize::new(0),
            max,
            counters,
        })
    }

    /// Takes one slot; false (and the drop counted) when all `max` are taken.
    fn admit(&self) -> bool {
        let admitted = self
            .queued
            .try_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.max).then_some(q + 1)
            })
            .is_ok();
        if !admitted {
            self.counters.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    fn release(&self, n: usize) {
        // Saturating: a span admitted before a bound reset can never underflow it.
        let _ = self
            .queued
            .try_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }
}

/// A span processor that admits sampled spans to `inner` within a [`QueueBound`].
#[derive(Debug)]
pub(crate) struct Bounded<P> {
    inner: P,
    bound: Arc<QueueBound>,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Unsampled spans are ignored by the batch processor and take no slot.
        if !span.span_context.is_sampled() || self.bound.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A span exporter that counts what it delivered and what was refused or never got through
/// (after the exporter's own retries), and frees the batch's [`QueueBound`] slots.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    bound: Arc<QueueBound>,
}

/// Frees a batch's slots and counts it as failed unless [`Self::finish`] says otherwise: the batch
/// processor drops the export future when it times out, and those spans are lost too.
struct InFlight<'a> {
    bound: &'a QueueBound,
    n: usize,
    outcome: Option<bool>,
}

impl InFlight<'_> {
    fn finish(mut self, delivered: bool) {
        self.outcome = Some(delivered);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.bound.release(self.n);
        let counters = &self.bound.counters;
        let counter = match self.outcome {
            Some(true) => &counters.spans_exported,
            Some(false) | None => &counters.spans_export_failed,
        };
        counter.fetch_add(self.n as u64, Ordering::Relaxed);
    }
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let in_flight = InFlight {
            bound: &self.bound,
            n: batch.len(),
            outcome: None,
        };
        let result = self.inner.export(batch).await;
        in_flight.finish(result.is_ok());
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_bound_and_counts_the_rest() {
        let counters = Arc::new(ExportCounters::default());
        let bound = QueueBound::new(2, Arc::clone(&counters));
        assert!(bound.admit());
        assert!(bound.admit());
        assert!(!bound.admit());
        assert_eq!(counters.spans_dropped.load(Ordering::Relaxed), 1);
        bound.release(1);
        assert!(bound.admit());
        bound.release(5);
        assert_eq!(bound.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_abandoned_export_frees_its_slots_and_counts_as_failed() {
        let counters = Arc::new(ExportCounters::default());
        let bound = QueueBound::new(3, Arc::clone(&counters));
        for _ in 0..3 {
            assert!(bound.admit());
        }
        drop(InFlight {
            bound: &bound,
            n: 2,
            outcome: None,
        });
        InFlight {
            bound: &bound,
            n: 1,
            outcome: None,
        }
        .finish(true);
        assert_eq!(bound.queued.load(Ordering::Relaxed), 0);
        assert_eq!(counters.spans_export_failed.load(Ordering::Relaxed), 2);
        assert_eq!(counters.spans_exported.load(Ordering::Relaxed), 1);
    }
}
