//! The daemon's state on arbitrary bytes: a snapshot that loads, and a
//! journal record replayed onto a store, never panic; whatever loads is a
//! consistent store whose own snapshot loads back to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

use xen_core::store::Store;

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = Store::restore(data) {
        let again = store.snapshot();
        let reloaded = Store::restore(&again).expect("a snapshot loads");
        assert_eq!(reloaded.snapshot(), again);
    }
    // The same bytes as a journal record over a fresh store.
    let mut store = Store::new();
    if store.replay(data).is_ok() && store.finish_replay().is_ok() {
        let snapshot = store.snapshot();
        let reloaded = Store::restore(&snapshot).expect("a replayed store saves and loads");
        assert_eq!(reloaded.snapshot(), snapshot);
    }
});
