//! Requests waiting for a response by id (HTTP/2 streams, MQTT packet ids,
//! Kafka correlation ids, DNS ids): a short list searched in order while a
//! connection has few open, which is nearly always, and a map past that.
//! (Measured in `l7_path`: the map alone cost the protocols with ids about
//! 40 ns a call more than those paired first in, first out.)

use std::mem;

use crate::fast_hash::HashMap;

/// Ids open at once before the map takes over.
const FEW: usize = 16;

pub(super) struct ById<T> {
    /// While the map is empty: every waiting request, in no order.
    few: Vec<(u64, T)>,
    /// Past `FEW`: every waiting request (`few` is then empty).
    many: HashMap<u64, T>,
}

impl<T> Default for ById<T> {
    fn default() -> Self {
        Self { few: Vec::new(), many: HashMap::default() }
    }
}

impl<T> ById<T> {
    pub fn len(&self) -> usize {
        self.few.len() + self.many.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wait for `id`'s response; the request that waited under the same id
    /// before, if any, is returned.
    pub fn insert(&mut self, id: u64, value: T) -> Option<T> {
        if self.many.is_empty() {
            if let Some((_, old)) = self.few.iter_mut().find(|(k, _)| *k == id) {
                return Some(mem::replace(old, value));
            }
            if self.few.len() < FEW {
                self.few.push((id, value));
                return None;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(id, value)
    }

    pub fn remove(&mut self, id: u64) -> Option<T> {
        if self.many.is_empty() {
            let i = self.few.iter().position(|(k, _)| *k == id)?;
            return Some(self.few.swap_remove(i).1);
        }
        // Once the map is emptied again, the list takes the next ones.
        self.many.remove(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.few.iter().map(|(k, v)| (*k, v)).chain(self.many.iter().map(|(k, v)| (*k, v)))
    }

    pub fn into_values(self) -> impl Iterator<Item = T> {
        self.few.into_iter().map(|(_, v)| v).chain(self.many.into_values())
    }

    /// Take out every request `pick` selects.
    pub fn take_where(&mut self, mut pick: impl FnMut(&T) -> bool, mut out: impl FnMut(T)) {
        let mut i = 0;
        while i < self.few.len() {
            if pick(&self.few[i].1) {
                out(self.few.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        if !self.many.is_empty() {
            let picked: Vec<u64> = self.many.iter().filter(|(_, v)| pick(v)).map(|(k, _)| *k).collect();
            for k in picked {
                out(self.many.remove(&k).expect("just seen"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list and the map hold the same requests the same way: past
    /// `FEW` open ids and back.
    #[test]
    fn list_then_map_then_list() {
        let mut ids = ById::default();
        for id in 0..40u64 {
            assert_eq!(ids.insert(id, id * 10), None);
            assert_eq!(ids.len() as u64, id + 1);
        }
        assert!(!ids.many.is_empty() && ids.few.is_empty());
        assert_eq!(ids.insert(3, 31), Some(30), "a reused id gives back the request before");
        for id in (0..40u64).rev() {
            assert_eq!(ids.remove(id), Some(if id == 3 { 31 } else { id * 10 }));
        }
        assert!(ids.is_empty());
        assert_eq!(ids.remove(5), None);
        ids.insert(7, 70);
        ids.insert(8, 80);
        assert!(ids.many.is_empty(), "an emptied map hands back to the list");
        assert_eq!(ids.insert(7, 71), Some(70));
        let mut taken = Vec::new();
        ids.take_where(|v| *v > 75, |v| taken.push(v));
        assert_eq!(taken, vec![80]);
        assert_eq!(ids.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(), vec![(7, 71)]);
        assert_eq!(ids.into_values().collect::<Vec<_>>(), vec![71]);
    }
}
