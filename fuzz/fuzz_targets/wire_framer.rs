#![no_main]

use libfuzzer_sys::fuzz_target;
use ringswarm_engine::wire::{Event, Framer, WireError, DEFAULT_MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the rest is cut into two feeds.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(rest.len());
    let (a, b) = rest.split_at(at);
    let mut framer = Framer::new(DEFAULT_MAX_FRAME);
    let mut on_event = |ev: Event<'_>| {
        if let Event::Block {
            block_len,
            offset,
            data,
            ..
        } = ev
        {
            assert!(offset as usize + data.len() <= block_len as usize);
        }
        Ok::<(), WireError>(())
    };
    if framer.feed(a, &mut on_event).is_ok() {
        let _ = framer.feed(b, &mut on_event);
    }
});
