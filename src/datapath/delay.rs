//! A worker's frames in waiting: copies of delayed frames ordered by deadline (a binary heap),
//! in buffers that are reused, never freed, so a steady delayed stream allocates nothing. The
//! worker's poll timeout is the next deadline; nothing here ever sleeps.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use super::fdb::PortId;
use super::port::Port;

/// Frames one worker holds at most; more are dropped (counted on the link) rather than queued.
pub const CAPACITY: usize = 4096;

/// What to do with a frame when its time comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Write it to `port` (it was leaving the switch).
    Send,
    /// Switch it as if it had just arrived on `port` (it was entering, `--both`).
    Forward,
}

pub struct Delayed {
    pub port: Arc<Port>,
    /// The port a `Send` frame came from, for blocks and captures.
    pub from: PortId,
    pub due: Due,
    pub frame: Vec<u8>,
}

#[derive(Default)]
pub struct DelayQueue {
    /// (deadline, sequence for FIFO among equal deadlines, slot).
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    slots: Vec<Option<Delayed>>,
    /// Buffers of frames sent, kept for the next copies.
    spare: Vec<Vec<u8>>,
    free: Vec<usize>,
    seq: u64,
    last: Option<usize>,
}

impl DelayQueue {
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Copy `frame` and hold it until `at`; false (nothing kept) when the queue is full.
    pub fn push(
        &mut self,
        at: Instant,
        port: &Arc<Port>,
        from: PortId,
        due: Due,
        frame: &[u8],
    ) -> bool {
        if self.heap.len() >= CAPACITY {
            return false;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        let entry = Delayed {
            port: port.clone(),
            from,
            due,
            frame: buf,
        };
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        self.seq += 1;
        self.last = Some(slot);
        self.heap.push(Reverse((at, self.seq, slot)));
        true
    }

    /// The frame pushed last, to damage it in place (`--corrupt`).
    pub fn last_frame_mut(&mut self) -> Option<&mut Vec<u8>> {
        let slot = self.last?;
        self.slots.get_mut(slot)?.as_mut().map(|d| &mut d.frame)
    }

    /// The next frame whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Delayed> {
        loop {
            let Reverse((at, _, slot)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            self.free.push(slot);
            // A slot emptied by `purge` left its heap entry behind: skip it.
            if let Some(entry) = self.slots[slot].take() {
                return Some(entry);
            }
        }
    }

    /// Give a delivered frame's buffer back for reuse.
    pub fn recycle(&mut self, frame: Vec<u8>) {
        if self.spare.len() < CAPACITY {
            self.spare.push(frame);
        }
    }

    /// Forget every frame for or from port `id` (it is being removed: its fd must close).
    pub fn purge(&mut self, id: PortId) {
        for slot in self.slots.iter_mut() {
            if slot.as_ref().is_some_and(|d| d.port.id == id) {
                if let Some(d) = slot.take() {
                    self.spare.push(d.frame);
                }
            }
        }
        self.heap
            .retain(|Reverse((_, _, s))| self.slots[*s].is_some());
        self.free = (0..self.slots.len())
            .filter(|i| self.slots[*i].is_none())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    fn port(id: PortId) -> Arc<Port> {
        let fd: OwnedFd = std::fs::File::open("/dev/null")
            .expect("open /dev/null")
            .into();
        Arc::new(Port::new(id, 0, format!("p{id}"), vec![fd], None))
    }

    #[test]
    fn releases_in_deadline_order_then_fifo() {
        let mut q = DelayQueue::default();
        let p = port(1);
        let t = Instant::now();
        assert!(q.push(t + Duration::from_millis(20), &p, 0, Due::Send, b"late"));
        assert!(q.push(t + Duration::from_millis(10), &p, 0, Due::Send, b"a"));
        assert!(q.push(t + Duration::from_millis(10), &p, 0, Due::Send, b"b"));
        assert_eq!(q.next_deadline(), Some(t + Duration::from_millis(10)));
        assert!(q.pop_due(t).is_none());
        let order: Vec<Vec<u8>> = std::iter::from_fn(|| q.pop_due(t + Duration::from_secs(1)))
            .map(|d| d.frame)
            .collect();
        assert_eq!(order, vec![b"a".to_vec(), b"b".to_vec(), b"late".to_vec()]);
        assert!(q.is_empty());
    }

    #[test]
    fn purge_forgets_a_port_and_full_queue_refuses() {
        let mut q = DelayQueue::default();
        let (a, b) = (port(1), port(2));
        let t = Instant::now();
        q.push(t, &a, 0, Due::Send, b"a");
        q.push(t, &b, 0, Due::Send, b"b");
        q.purge(1);
        assert_eq!(q.len(), 1);
        let d = q.pop_due(t).expect("b is due");
        assert_eq!(d.port.id, 2);
        q.recycle(d.frame);
        for _ in 0..CAPACITY {
            assert!(q.push(t, &a, 0, Due::Send, b"x"));
        }
        assert!(!q.push(t, &a, 0, Due::Send, b"x"));
    }
}
