//! The interned attribute-set store: a million routes sharing a few
//! thousand attribute sets store those sets once, and sets nothing refers to
//! any more are swept in bounded steps.

use std::sync::Arc;

use super::{Attrs, Rib};

/// Interned attribute sets a flush looks at for garbage, whatever the
/// flush's own size: a full flush (a reconfiguration, a timer) must not
/// turn into a pass over a quarter million sets either.
pub(super) const SWEEP_STEP: usize = 4096;

impl Rib {
    /// The stored set equal to `a` (stored now if new): equal sets share one
    /// `Arc`, so they compare by pointer.
    pub(super) fn intern(&mut self, a: Attrs) -> Arc<Attrs> {
        if let Some(x) = self.interned.get(&a) {
            return x.clone();
        }
        let arc = Arc::new(a);
        self.interned.insert(arc.clone());
        self.interned_list.push(arc.clone());
        arc
    }

    /// Looks at up to `max` interned sets of the sweep under way and takes
    /// out those nothing else refers to.
    pub(super) fn sweep_some(&mut self, max: usize) -> Vec<Arc<Attrs>> {
        let mut garbage = Vec::new();
        let Some(mut i) = self.sweep else {
            return garbage;
        };
        let mut looked = 0;
        while i < self.interned_list.len() && looked < max {
            looked += 1;
            // Held by the set and the list only.
            if Arc::strong_count(&self.interned_list[i]) == 2 {
                let a = self.interned_list.swap_remove(i);
                self.interned.remove(&a);
                garbage.push(a);
            } else {
                i += 1;
            }
        }
        self.sweep = (i < self.interned_list.len()).then_some(i);
        garbage
    }

    /// Number of distinct attribute sets stored.
    pub fn attribute_sets(&self) -> usize {
        self.interned.len()
    }
}
