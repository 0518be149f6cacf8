//! Process-wide state shared by every VM of a plugin: shared data, shared queues, metrics, and
//! the inboxes through which background work (http calls, queue notifications) reaches a VM.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::abi::{MetricType, Status};
use crate::http_call::CallResult;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Something that happened outside a VM and must be delivered to it on the host's event loop.
#[derive(Debug)]
pub(crate) enum Event {
    HttpCallDone { token: u32, result: CallResult },
    QueueReady { root_context: u32, queue: u32 },
}

/// A VM's inbox of events posted from other threads.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    events: Mutex<Vec<Event>>,
}

impl Inbox {
    pub(crate) fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *lock(&self.events))
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.events).is_empty()
    }
}

/// Wakes the event loop when any inbox receives an event.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Notifier {
    pub(crate) fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    fn bump(&self) {
        *lock(&self.generation) += 1;
        self.cv.notify_all();
    }

    /// Waits until the generation differs from `seen` or `max` elapses.
    pub(crate) fn wait(&self, seen: u64, max: Duration) {
        let g = lock(&self.generation);
        if *g != seen {
            return;
        }
        let _ = self.cv.wait_timeout_while(g, max, |g| *g == seen);
    }
}

#[derive(Debug)]
struct Metric {
    kind: MetricType,
    value: i64,
    samples: Vec<u64>,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    /// (worker index, root context id) of the last registration.
    target: (usize, u32),
}

#[derive(Debug, Default)]
struct QueueTable {
    by_name: HashMap<(String, String), u32>,
    by_token: HashMap<u32, Queue>,
    next_token: u32,
}

#[derive(Debug, Default)]
struct DataTable {
    entries: HashMap<(String, String), (Vec<u8>, u32)>,
    last_cas: u32,
}

/// The plugin's stand-in for Envoy's process-wide tables. One is created per `Plugin`; VMs of the
/// same plugin share it.
#[derive(Debug, Default)]
pub struct SharedState {
    data: Mutex<DataTable>,
    queues: Mutex<QueueTable>,
    metrics: Mutex<BTreeMap<String, Metric>>,
    pub(crate) inboxes: Mutex<Vec<Arc<Inbox>>>,
    pub(crate) notifier: Arc<Notifier>,
}

impl SharedState {
    pub(crate) fn post(&self, worker: usize, event: Event) {
        let inbox = lock(&self.inboxes).get(worker).cloned();
        if let Some(inbox) = inbox {
            lock(&inbox.events).push(event);
            self.notifier.bump();
        }
    }

    // ---- shared data ----

    /// Returns (value, cas) or None when the key is missing.
    pub fn get_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.data).entries.get(&(vm_id.to_string(), key.to_string())).cloned()
    }

    pub(crate) fn set_data(&self, vm_id: &str, key: &str, value: &[u8], cas: u32) -> Status {
        let mut t = lock(&self.data);
        let k = (vm_id.to_string(), key.to_string());
        if let Some(entry) = t.entries.get(&k) {
            if cas != 0 && cas != entry.1 {
                return Status::CasMismatch;
            }
        }
        // CAS values start at 1, increase on every successful set and skip 0.
        t.last_cas = t.last_cas.wrapping_add(1);
        if t.last_cas == 0 {
            t.last_cas = 1;
        }
        let next = t.last_cas;
        t.entries.insert(k, (value.to_vec(), next));
        Status::Ok
    }

    // ---- shared queues ----

    pub(crate) fn register_queue(&self, vm_id: &str, name: &str, target: (usize, u32)) -> u32 {
        let mut q = lock(&self.queues);
        let k = (vm_id.to_string(), name.to_string());
        if let Some(&token) = q.by_name.get(&k) {
            if let Some(queue) = q.by_token.get_mut(&token) {
                queue.target = target;
            }
            return token;
        }
        q.next_token += 1;
        let token = q.next_token;
        q.by_name.insert(k, token);
        q.by_token.insert(token, Queue { items: VecDeque::new(), target });
        token
    }

    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        lock(&self.queues).by_name.get(&(vm_id.to_string(), name.to_string())).copied()
    }

    pub(crate) fn enqueue(&self, token: u32, value: &[u8]) -> Status {
        let target = {
            let mut q = lock(&self.queues);
            let Some(queue) = q.by_token.get_mut(&token) else {
                return Status::NotFound;
            };
            queue.items.push_back(value.to_vec());
            queue.target
        };
        self.post(target.0, Event::QueueReady { root_context: target.1, queue: token });
        Status::Ok
    }

    pub(crate) fn dequeue(&self, token: u32) -> Result<Vec<u8>, Status> {
        let mut q = lock(&self.queues);
        let Some(queue) = q.by_token.get_mut(&token) else {
            return Err(Status::NotFound);
        };
        queue.items.pop_front().ok_or(Status::Empty)
    }

    // ---- metrics ----

    pub(crate) fn define_metric(&self, kind: MetricType, name: &str) {
        lock(&self.metrics).entry(name.to_string()).or_insert(Metric { kind, value: 0, samples: Vec::new() });
    }

    pub(crate) fn increment_metric(&self, name: &str, kind: MetricType, offset: i64) -> Status {
        let mut m = lock(&self.metrics);
        let Some(metric) = m.get_mut(name) else {
            return Status::NotFound;
        };
        match kind {
            MetricType::Counter if offset > 0 => metric.value = metric.value.wrapping_add(offset),
            MetricType::Counter | MetricType::Histogram => return Status::BadArgument,
            MetricType::Gauge => metric.value = metric.value.wrapping_add(offset),
        }
        Status::Ok
    }

    pub(crate) fn record_metric(&self, name: &str, kind: MetricType, value: i64) -> Status {
        let mut m = lock(&self.metrics);
        let Some(metric) = m.get_mut(name) else {
            return Status::NotFound;
        };
        match kind {
            MetricType::Counter => metric.value = metric.value.wrapping_add(value),
            MetricType::Gauge => metric.value = value,
            MetricType::Histogram => metric.samples.push(value as u64),
        }
        Status::Ok
    }

    /// The value of a counter or gauge by name (histograms: None).
    pub fn metric(&self, name: &str) -> Option<i64> {
        let m = lock(&self.metrics);
        let metric = m.get(name)?;
        (metric.kind != MetricType::Histogram).then_some(metric.value)
    }

    /// The samples recorded into a histogram.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        let m = lock(&self.metrics);
        let metric = m.get(name)?;
        (metric.kind == MetricType::Histogram).then(|| metric.samples.clone())
    }

    /// Names and types of every metric defined so far.
    pub fn metric_names(&self) -> Vec<(String, MetricType)> {
        lock(&self.metrics).iter().map(|(k, v)| (k.clone(), v.kind)).collect()
    }
}
