//! Test-only hooks: let a unit test stall one thread at a chosen point of the store's
//! protocol (compiled only under `cfg(test)`; the release code has no trace of them).

use std::cell::RefCell;

type Hook = (Publisher, Box<dyn FnMut()>);

pub(crate) use crate::family::Publisher;

thread_local! {
    /// Run by this thread just before an IPv6 publication (between reservation and publish).
    static BEFORE_PUBLISH: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

/// Arms `f` for the calling thread only; it runs once, at its next IPv6 publication by `who`.
pub(crate) fn arm_before_publish(who: Publisher, f: impl FnMut() + 'static) {
    BEFORE_PUBLISH.with(|h| *h.borrow_mut() = Some((who, Box::new(f))));
}

pub(crate) fn before_publish(who: Publisher) {
    let armed = BEFORE_PUBLISH.with(|h| {
        let mut h = h.borrow_mut();
        if h.as_ref().is_some_and(|(w, _)| *w == who) {
            h.take()
        } else {
            None
        }
    });
    if let Some((_, mut f)) = armed {
        f();
    }
}
