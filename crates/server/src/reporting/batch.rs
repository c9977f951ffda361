//! Group commit for the reporting role: many reports, one transaction.
//!
//! A request hands its parsed [`ClientReport`] to the [`Batcher`] and waits for
//! the answer of the batch it lands in. A few writer tasks ([`WRITERS`]) take
//! turns at the queue: each takes whatever is queued (at least one report, at
//! most [`MAX_BATCH`]) and stores it with one [`ReportingStore::ingest`], so
//! that under load a transaction, its commit and its WAL flush serve dozens of
//! reports, and an idle server still stores a lone report at once (no timer
//! waits for a batch to fill). A request is answered only once its batch has
//! committed: durability is the store's own (`synchronous_commit` stays on).
//!
//! One bad report must not fail its neighbours: when a batch fails, its
//! reports are stored again one by one and each request gets its own outcome,
//! except when the failure says the database itself is unreachable, out of
//! space or on another schema, which every report of the batch would meet
//! alike. A report id that appears twice in one batch (a client retrying while
//! its first attempt is still queued) is stored once with the batch and its
//! repeats after it, where they count as duplicates.
//!
//! The queue is bounded ([`QUEUE`] reports): when it is full a request is
//! refused at once ([`Refused::Busy`], `503` with `Retry-After`) rather than
//! queued without bound. The role's own limit on requests in flight
//! (`reporting.max_concurrent_requests`) normally keeps it far from full.

use std::collections::HashSet;
use std::sync::Arc;

use avail_model::domain::ClientReport;
use avail_store::{ReportingStore, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most reports stored by one transaction.
pub(crate) const MAX_BATCH: usize = 512;
/// Transactions in flight at once (each holds one connection of the store's pool).
pub(crate) const WRITERS: usize = 4;
/// Reports waiting for a writer, at most.
pub(crate) const QUEUE: usize = 4 * MAX_BATCH;

/// Why a report was not stored.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The queue is full (or the writers are gone): try again shortly.
    Busy,
    /// The store refused the report.
    Store(StoreError),
}

/// A report and whom to tell how it went.
struct Job {
    report: ClientReport,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue in front of the writers; cheap to clone. The writers stop once
/// every clone is dropped and the queue is drained.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts `writers` writer tasks on the current runtime, storing batches of
    /// up to `max_batch` reports into `store`, behind a queue of `capacity`.
    pub(crate) fn start(
        store: Arc<dyn ReportingStore>,
        writers: usize,
        max_batch: usize,
        capacity: usize,
    ) -> Batcher {
        let (queue, jobs) = mpsc::channel(capacity.max(1));
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(store.clone(), jobs.clone(), max_batch.max(1)));
        }
        Batcher { queue }
    }

    /// Stores `report` with the next batch; returns once that batch has
    /// committed (or the report failed on its own).
    pub(crate) async fn submit(&self, report: ClientReport) -> Result<(), Refused> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .try_send(Job { report, reply })
            .map_err(|_| Refused::Busy)?;
        // A dropped reply: the writer is gone (the runtime is shutting down).
        outcome
            .await
            .map_err(|_| Refused::Busy)?
            .map_err(Refused::Store)
    }
}

/// Takes turns at the queue with the other writers until it is closed.
async fn writer(
    store: Arc<dyn ReportingStore>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        // The lock is held only while waiting for and taking jobs, so the
        // next writer collects what arrives while this one commits.
        if jobs.lock().await.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        commit(store.as_ref(), std::mem::take(&mut batch)).await;
    }
}

/// Stores `jobs` in one transaction and answers each.
async fn commit(store: &dyn ReportingStore, jobs: Vec<Job>) {
    let mut ids = HashSet::with_capacity(jobs.len());
    let (first, repeats): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| ids.insert(j.report.id));
    let (reports, replies): (Vec<ClientReport>, Vec<_>) =
        first.into_iter().map(|j| (j.report, j.reply)).unzip();
    match store.ingest(&reports).await {
        Ok(result) => {
            tracing::debug!(
                reports = reports.len(),
                stored = result.stored,
                duplicates = result.duplicates,
                "batch committed"
            );
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) if reports.len() == 1 => {
            let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
        }
        Err(e) => match shared_failure(&e) {
            Some(again) => {
                tracing::warn!(reports = reports.len(), error = %e, "batch failed");
                for reply in replies {
                    let _ = reply.send(Err(again(&e)));
                }
            }
            None => {
                tracing::warn!(
                    reports = reports.len(),
                    error = %e,
                    "batch failed; storing its reports one by one"
                );
                for (report, reply) in reports.into_iter().zip(replies) {
                    one(store, report, reply).await;
                }
            }
        },
    }
    for job in repeats {
        one(store, job.report, job.reply).await;
    }
}

/// Stores one report on its own and answers it.
async fn one(
    store: &dyn ReportingStore,
    report: ClientReport,
    reply: oneshot::Sender<Result<(), StoreError>>,
) {
    let outcome = store.ingest(std::slice::from_ref(&report)).await;
    let _ = reply.send(outcome.map(drop));
}

/// For a failure every report of a batch would meet alike (the database is
/// unreachable, full or on another schema), how to repeat it for each.
fn shared_failure(e: &StoreError) -> Option<fn(&StoreError) -> StoreError> {
    match e {
        StoreError::Unavailable(_) | StoreError::Full(_) | StoreError::Schema(_) => {
            Some(|e| match e {
                StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                StoreError::Full(m) => StoreError::Full(m.clone()),
                StoreError::Schema(m) => StoreError::Schema(m.clone()),
                other => StoreError::Internal(other.to_string()),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use avail_model::domain::ClientInformation;
    use avail_model::{ClientCache, IngestResult, LaunchCount, LaunchGrouping, RawReport};
    use uuid::Uuid;

    /// Records each `ingest` call; fails a batch holding a report whose body is
    /// "bad", or every batch while `down`; `gate` holds every call until opened.
    #[derive(Default)]
    struct Fake {
        calls: StdMutex<Vec<Vec<Uuid>>>,
        stored: StdMutex<HashSet<Uuid>>,
        down: std::sync::atomic::AtomicBool,
        gate: tokio::sync::RwLock<()>,
    }

    #[async_trait]
    impl ReportingStore for Fake {
        async fn ingest(&self, reports: &[ClientReport]) -> avail_store::Result<IngestResult> {
            let _open = self.gate.read().await;
            self.calls
                .lock()
                .unwrap()
                .push(reports.iter().map(|r| r.id).collect());
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            if reports.iter().any(|r| r.body == "bad") {
                return Err(StoreError::Internal("bad report".into()));
            }
            let mut stored = self.stored.lock().unwrap();
            let fresh = reports.iter().filter(|r| stored.insert(r.id)).count() as u64;
            Ok(IngestResult {
                stored: fresh,
                duplicates: reports.len() as u64 - fresh,
            })
        }
        async fn raw_report(&self, _: Uuid) -> avail_store::Result<Option<RawReport>> {
            Ok(None)
        }
        async fn launches(&self, _: LaunchGrouping) -> avail_store::Result<Vec<LaunchCount>> {
            Ok(vec![])
        }
        async fn client_caches(&self) -> avail_store::Result<Vec<ClientCache>> {
            Ok(vec![])
        }
    }

    fn report(id: Uuid, body: &str) -> ClientReport {
        ClientReport {
            id,
            received_at: chrono::Utc::now(),
            source_host: "127.0.0.1".into(),
            body: body.into(),
            client: ClientInformation {
                host_name: "pc".into(),
                client_version: "5.1".into(),
                processor_arch: "x64".into(),
                os_version: "10.0".into(),
                os_service_pack: 0,
                os_type: "Client".into(),
            },
            packages: vec![],
            usage: vec![],
        }
    }

    /// Submits `reports` at once while the store is held, then lets it go.
    async fn submit_all(
        fake: &Arc<Fake>,
        batcher: &Batcher,
        reports: Vec<ClientReport>,
    ) -> Vec<Result<(), Refused>> {
        let held = fake.gate.write().await;
        let tasks: Vec<_> = reports
            .into_iter()
            .map(|r| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(r).await })
            })
            .collect();
        // Let every submission reach the queue before the store answers.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        let mut out = vec![];
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn queued_reports_share_one_transaction() {
        let fake = Arc::new(Fake::default());
        let batcher = Batcher::start(fake.clone(), 1, 512, 1024);
        // A first report keeps the only writer busy while the others queue.
        let ids: Vec<Uuid> = (0..101).map(|_| Uuid::new_v4()).collect();
        let results = submit_all(
            &fake,
            &batcher,
            ids.iter().map(|&id| report(id, "ok")).collect(),
        )
        .await;
        assert!(results.iter().all(Result::is_ok));
        let calls = fake.calls.lock().unwrap().clone();
        assert!(
            calls.len() <= 2,
            "{} transactions for 101 reports",
            calls.len()
        );
        assert_eq!(calls.concat().len(), 101);
        assert_eq!(fake.stored.lock().unwrap().len(), 101);
    }

    #[tokio::test]
    async fn a_bad_report_fails_only_its_own_request() {
        let fake = Arc::new(Fake::default());
        let batcher = Batcher::start(fake.clone(), 1, 512, 1024);
        let mut reports: Vec<ClientReport> =
            (0..10).map(|_| report(Uuid::new_v4(), "ok")).collect();
        reports[4].body = "bad".into();
        let results = submit_all(&fake, &batcher, reports).await;
        for (i, r) in results.iter().enumerate() {
            match (i, r) {
                (4, Err(Refused::Store(StoreError::Internal(_)))) => {}
                (4, other) => panic!("the bad report got {other:?}"),
                (_, r) => assert!(r.is_ok(), "report {i}: {r:?}"),
            }
        }
        assert_eq!(fake.stored.lock().unwrap().len(), 9);
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_the_batch_without_retries() {
        let fake = Arc::new(Fake::default());
        fake.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let batcher = Batcher::start(fake.clone(), 1, 512, 1024);
        let reports = (0..20).map(|_| report(Uuid::new_v4(), "ok")).collect();
        let results = submit_all(&fake, &batcher, reports).await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(Refused::Store(StoreError::Unavailable(_)))))
        );
        // One call per batch, none per report.
        assert!(fake.calls.lock().unwrap().len() <= 2);
    }

    #[tokio::test]
    async fn a_report_repeated_in_one_batch_is_stored_once() {
        let fake = Arc::new(Fake::default());
        let batcher = Batcher::start(fake.clone(), 1, 512, 1024);
        let id = Uuid::new_v4();
        let reports = vec![
            report(id, "ok"),
            report(Uuid::new_v4(), "ok"),
            report(id, "ok"),
        ];
        let results = submit_all(&fake, &batcher, reports).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(fake.stored.lock().unwrap().len(), 2);
        for call in fake.calls.lock().unwrap().iter() {
            let distinct: HashSet<&Uuid> = call.iter().collect();
            assert_eq!(distinct.len(), call.len(), "an id twice in one transaction");
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let fake = Arc::new(Fake::default());
        let batcher = Batcher::start(fake.clone(), 1, 1, 1);
        let held = fake.gate.write().await;
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.submit(report(Uuid::new_v4(), "ok")).await }
        });
        // The writer takes the first report and waits at the store; the
        // second fills the queue; the third finds it full.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = tokio::spawn({
            let b = batcher.clone();
            async move { b.submit(report(Uuid::new_v4(), "ok")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third = batcher.submit(report(Uuid::new_v4(), "ok")).await;
        assert!(matches!(third, Err(Refused::Busy)), "{third:?}");
        drop(held);
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
    }
}
