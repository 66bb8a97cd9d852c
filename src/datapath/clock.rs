//! Coarse time for MAC aging: whole seconds since the datapath started.

use std::time::Instant;

pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_secs(&self) -> u32 {
        self.start.elapsed().as_secs() as u32
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
