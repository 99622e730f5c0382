//! Controls the connection task hands straight to the task that acts on
//! them (the forwarder) instead of through the main loop, which would only
//! carry them: a forwarded request goes connection -> request task ->
//! connection.
//!
//! The order stays what it was when every control passed the main loop: a
//! control takes the shortcut only when the main loop has handled every
//! input given to it before (an approval, a disconnect), and nothing read
//! before it waits to be given; otherwise it goes the long way, behind them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::client::{Outgoing, Session};
use super::responder::Responder;
use crate::wire::Control;

/// Acts on the controls it takes. The connection task calls it, so it
/// must not wait (least of all on the outbox that task drains).
pub(crate) trait Shortcut: Send + Sync + 'static {
    /// Acts on `control`, answering through `to`; gives back a control it
    /// does not act on.
    fn take(&self, control: Control, to: Responder) -> Option<Control>;
}

/// The connection's end: the shortcut, and how many inputs the main loop
/// was given and has not handled yet.
pub(super) struct Direct {
    shortcut: Option<Arc<dyn Shortcut>>,
    /// Weak: the connection must not keep the outbox open by itself.
    outbox: mpsc::WeakSender<Outgoing>,
    unhandled: Arc<AtomicUsize>,
}

impl Direct {
    pub(super) fn new(
        shortcut: Option<Arc<dyn Shortcut>>,
        outbox: &mpsc::Sender<Outgoing>,
        unhandled: Arc<AtomicUsize>,
    ) -> Self {
        Direct {
            shortcut,
            outbox: outbox.downgrade(),
            unhandled,
        }
    }

    /// Counts an input about to be given to the main loop (before it is
    /// sent, so the main loop's count never goes below zero).
    pub(super) fn giving(&self) {
        self.unhandled.fetch_add(1, Ordering::AcqRel);
    }

    /// Hands `control` to the shortcut when the main loop has handled
    /// everything before it (`queued`: inputs read before it still wait to
    /// be given); gives it back otherwise.
    pub(super) fn take(&self, session: Session, control: Control, queued: bool) -> Option<Control> {
        let Some(shortcut) = &self.shortcut else {
            return Some(control);
        };
        if queued || self.unhandled.load(Ordering::Acquire) != 0 {
            return Some(control);
        }
        let Some(outbox) = self.outbox.upgrade() else {
            return Some(control);
        };
        shortcut.take(control, Responder::new(outbox, session))
    }
}

/// The main loop's end: it has handled one input.
pub(super) fn handled(unhandled: &AtomicUsize) {
    // Saturating: a runner that never counted (no shortcut) stays at zero.
    let _ = unhandled.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Takes `forward_http_cancel` and keeps its responder.
    #[derive(Default)]
    struct Cancels(Mutex<Vec<Responder>>);

    impl Shortcut for Cancels {
        fn take(&self, control: Control, to: Responder) -> Option<Control> {
            match control {
                Control::ForwardHttpCancel(_) => {
                    self.0.lock().unwrap().push(to);
                    None
                }
                other => Some(other),
            }
        }
    }

    fn control(kind: &str) -> Control {
        let text = match kind {
            "cancel" => r#"{"type":"forward_http_cancel","requestId":"r1"}"#,
            _ => r#"{"type":"update_runner_config","allowedCwds":[]}"#,
        };
        let raw = serde_json::value::RawValue::from_string(text.into()).unwrap();
        Control::parse(&raw).unwrap()
    }

    fn direct() -> (
        Direct,
        Arc<Cancels>,
        mpsc::Sender<Outgoing>,
        Arc<AtomicUsize>,
    ) {
        let taken = Arc::new(Cancels::default());
        let (outbox, _) = mpsc::channel(1);
        let unhandled = Arc::new(AtomicUsize::new(0));
        let direct = Direct::new(Some(taken.clone()), &outbox, unhandled.clone());
        (direct, taken, outbox, unhandled)
    }

    #[test]
    fn a_control_it_acts_on_skips_the_main_loop() {
        let (direct, taken, _outbox, _) = direct();
        assert!(direct.take(Session(7), control("cancel"), false).is_none());
        assert_eq!(taken.0.lock().unwrap().len(), 1);
        // Others go the long way.
        assert!(direct.take(Session(7), control("config"), false).is_some());
    }

    #[test]
    fn it_waits_behind_what_the_main_loop_has_not_handled() {
        let (direct, taken, _outbox, unhandled) = direct();
        // Read before it and not yet given to the main loop.
        assert!(direct.take(Session(1), control("cancel"), true).is_some());
        // Given, not handled (an approval, a disconnect).
        direct.giving();
        direct.giving();
        assert!(direct.take(Session(1), control("cancel"), false).is_some());
        handled(&unhandled);
        assert!(direct.take(Session(1), control("cancel"), false).is_some());
        handled(&unhandled);
        assert!(direct.take(Session(1), control("cancel"), false).is_none());
        assert_eq!(taken.0.lock().unwrap().len(), 1);
        // A runner that says "handled" once too often stays at zero.
        handled(&unhandled);
        assert_eq!(unhandled.load(Ordering::Acquire), 0);
    }

    #[test]
    fn without_a_shortcut_or_an_outbox_everything_goes_the_long_way() {
        let (outbox, _) = mpsc::channel(1);
        let none = Direct::new(None, &outbox, Arc::default());
        assert!(none.take(Session(1), control("cancel"), false).is_some());
        let (direct, taken, outbox, _) = direct();
        drop(outbox);
        assert!(direct.take(Session(1), control("cancel"), false).is_some());
        assert!(taken.0.lock().unwrap().is_empty());
    }
}
